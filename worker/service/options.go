package service

import (
	"errors"
	"fmt"
	"time"

	"github.com/gptoss/server/shared/pprof"
	"github.com/gptoss/server/shared/wire"
)

// Backends, load formats and CPU kernels (Options.Backend,
// Options.LoadFormat, Options.CPUKernels).
const (
	BackendCPU  = "cpu"
	BackendCUDA = "cuda"

	LoadAuto  = "auto"  // the checkpoint's safetensors
	LoadDummy = "dummy" // random weights of the checkpoint's (or preset's) shapes

	CPUKernelsExact = "exact"
	CPUKernelsFast  = "fast"
)

// Options configures a worker. The command (worker/main.go) fills it from
// flags, the environment and defaults; tests fill it directly.
type Options struct {
	NATSURL            string
	NATSToken          string
	Deployment         string
	Rank               int
	WorldSize          int
	WorkerID           string
	Heartbeat          time.Duration
	CoordinatorTimeout time.Duration
	StepTimeout        time.Duration
	// Backend runs the model on BackendCPU or BackendCUDA; Kernels names
	// the CUDA kernels library ("" searches, see worker/cuda Open);
	// GPUMemoryUtilization is the fraction of free GPU memory the KV cache
	// takes when a Load leaves its size 0; NCCL joins a one-rank NCCL
	// communicator at world size 1 (the collective path on one GPU);
	// CUDAGraphs replays decode steps as CUDA graphs.
	Backend              string
	Kernels              string
	GPUMemoryUtilization float64
	NCCL                 bool
	CUDAGraphs           bool
	// LoadFormat is LoadAuto (the checkpoint's weights) or LoadDummy
	// (random weights of its shapes, or of a preset named instead of a
	// directory).
	LoadFormat string
	// CPUKernels is CPUKernelsExact (the default: float32 products, the
	// tests' reference) or CPUKernelsFast (activations rounded to int8
	// for the MXFP4 experts and to bf16 for the dense matrices, where the
	// CPU has AVX-512 VNNI and BF16; engine.CPUOptions).
	CPUKernels string
	// ParentPID makes the worker exit when its parent process changes (the
	// launcher died and the worker was reparented); 0: not watched.
	ParentPID int
	// Version is reported in the registration.
	Version string
	// PprofAddr, when set, serves net/http/pprof on this loopback
	// host:port (shared/pprof); "" leaves profiling off.
	PprofAddr string
}

// Validate checks the options that no single setting can check alone.
// Errors name the flag.
func (o *Options) Validate() error {
	switch {
	case o.WorldSize < 1:
		return fmt.Errorf("--world-size %d: must be at least 1", o.WorldSize)
	case o.Rank < 0 || o.Rank >= o.WorldSize:
		return fmt.Errorf("--rank %d: must be in [0, %d) for --world-size %d", o.Rank, o.WorldSize, o.WorldSize)
	case o.Heartbeat <= 0:
		return fmt.Errorf("--heartbeat %s: must be positive", o.Heartbeat)
	case o.CoordinatorTimeout <= 0:
		return fmt.Errorf("--coordinator-timeout %s: must be positive", o.CoordinatorTimeout)
	case o.StepTimeout <= 0:
		return fmt.Errorf("--step-timeout %s: must be positive", o.StepTimeout)
	case o.NATSURL == "":
		return errors.New("--nats-url is empty")
	case o.Backend != BackendCPU && o.Backend != BackendCUDA:
		return fmt.Errorf("--backend %q: want cpu or cuda", o.Backend)
	case !(o.GPUMemoryUtilization > 0 && o.GPUMemoryUtilization <= 1):
		return fmt.Errorf("--gpu-memory-utilization %g: want a fraction in (0, 1]", o.GPUMemoryUtilization)
	case o.LoadFormat != LoadAuto && o.LoadFormat != LoadDummy:
		return fmt.Errorf("--load-format %q: want auto or dummy", o.LoadFormat)
	case o.CPUKernels != "" && o.CPUKernels != CPUKernelsExact && o.CPUKernels != CPUKernelsFast:
		return fmt.Errorf("--cpu-kernels %q: want exact or fast", o.CPUKernels)
	case o.NCCL && o.Backend != BackendCUDA:
		return errors.New("--nccl needs --backend cuda")
	case o.ParentPID < 0:
		return fmt.Errorf("parent pid %d", o.ParentPID)
	case o.WorkerID == "":
		return errors.New("--worker-id is empty")
	}
	if _, err := wire.NewSubjects(o.Deployment); err != nil {
		return fmt.Errorf("--deployment: %w", err)
	}
	if o.PprofAddr != "" {
		if err := pprof.Check(o.PprofAddr); err != nil {
			return err
		}
	}
	return nil
}
