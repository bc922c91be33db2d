// Package wire is the coordinator<->worker protocol: protobuf messages
// (wire.proto) on NATS subjects namespaced per deployment, so two servers
// sharing one NATS never see each other's traffic, and the step codec
// (codec.go) between the executor contract of shared/step and the Step
// and StepResult messages.
package wire

import (
	"fmt"
	"strconv"

	"google.golang.org/protobuf/proto"
)

// MaxMessage bounds every message either side sends or accepts. A
// 131072-token prompt as varints is under 400 KiB; the embedded NATS
// server is configured with this max_payload.
const MaxMessage = 8 << 20

// Subjects names the NATS subjects of one deployment.
type Subjects struct {
	prefix string
}

// NewSubjects returns the subjects of deployment name (letters, digits,
// '-' and '_'; it becomes one NATS subject token).
func NewSubjects(deployment string) (Subjects, error) {
	if deployment == "" {
		return Subjects{}, fmt.Errorf("wire: empty deployment name")
	}
	for _, r := range deployment {
		if !(r == '-' || r == '_' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')) {
			return Subjects{}, fmt.Errorf("wire: deployment name %q: only letters, digits, - and _", deployment)
		}
	}
	return Subjects{prefix: "gptoss." + deployment}, nil
}

// Register is where workers announce themselves.
func (s Subjects) Register() string { return s.prefix + ".register" }

// Heartbeat is where workers report liveness.
func (s Subjects) Heartbeat() string { return s.prefix + ".heartbeat" }

// CoordinatorHeartbeat is where the coordinator reports liveness; workers
// exit when it falls silent.
func (s Subjects) CoordinatorHeartbeat() string { return s.prefix + ".coordinator.heartbeat" }

// Load is the request subject of rank's load command.
func (s Subjects) Load(rank int) string { return s.prefix + ".load." + strconv.Itoa(rank) }

// Step is the broadcast subject of forward steps.
func (s Subjects) Step() string { return s.prefix + ".step" }

// Collective is the subject of tensor-parallel collective traffic between
// the ranks of one load (epoch); the payload is raw float32 data, not
// protobuf, with a small header (see worker/collective).
func (s Subjects) Collective(epoch uint64) string {
	return s.prefix + ".coll." + strconv.FormatUint(epoch, 10)
}

// NCCL is where rank 0 of a load (epoch) hands the NCCL communicator's
// unique id to the other ranks (request/reply; see worker/collective
// ShareID): per epoch, so a rank of an earlier load never joins this one.
func (s Subjects) NCCL(epoch uint64) string {
	return s.prefix + ".nccl." + strconv.FormatUint(epoch, 10)
}

// Control is the broadcast subject of drain and shutdown.
func (s Subjects) Control() string { return s.prefix + ".control" }

// Marshal encodes m, refusing messages over MaxMessage.
func Marshal(m proto.Message) ([]byte, error) {
	if n := proto.Size(m); n > MaxMessage {
		return nil, fmt.Errorf("wire: %T of %d bytes exceeds %d", m, n, MaxMessage)
	}
	return proto.Marshal(m)
}

// Unmarshal decodes b into m, refusing oversized input.
func Unmarshal(b []byte, m proto.Message) error {
	if len(b) > MaxMessage {
		return fmt.Errorf("wire: %T of %d bytes exceeds %d", m, len(b), MaxMessage)
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return fmt.Errorf("wire: decode %T: %w", m, err)
	}
	return nil
}

// Int32s converts token ids or a block table to the wire's int32 (nil
// stays nil, so an absent table stays absent).
func Int32s(v []int) []int32 {
	if v == nil {
		return nil
	}
	out := make([]int32, len(v))
	for i, x := range v {
		out[i] = int32(x)
	}
	return out
}

// Ints converts back from the wire (nil stays nil).
func Ints(v []int32) []int {
	if v == nil {
		return nil
	}
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x)
	}
	return out
}
