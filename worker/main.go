// Command worker is one gpt-oss worker process: one per device. It
// connects to NATS, registers with the coordinator of its deployment,
// heartbeats, loads its model when told to and runs the forward steps the
// coordinator broadcasts, replying with the sampled tokens (rank 0). The
// service itself is worker/service; this file only turns flags into its
// Options and runs it, as a go-plugin plugin when the coordinator launched
// it.
//
//	worker --nats-url nats://127.0.0.1:4222 --deployment default --rank 0 --world-size 1
//
// With --backend cuda the model runs on the GPU through the kernels
// library (make kernels; docs/cuda.md), opened at load time: a worker
// without it still starts, registers and answers the Load with the error.
// --load-format dummy serves random weights of real shapes (the Load's
// model may then be a preset: 20b, 120b, tiny) for benchmarks without the
// checkpoint files. --pprof-addr serves net/http/pprof on a loopback port
// of its own (off by default).
//
// Settings are read by shared/config, as the coordinator's are: every flag
// also reads GPTOSS_WORKER_<NAME> from the environment (dashes become
// underscores); --nats-token also reads GPTOSS_NATS_TOKEN. Flags win over
// the environment. GPTOSS_WORKER_PARENT_PID (set by the launcher, no flag)
// makes the worker exit when its parent dies. Logs go to stderr; stdout
// stays empty (go-plugin's handshake uses it).
//
// Exit status: 0 after shutdown, a signal, the coordinator's or the
// parent's disappearance; 1 on a fatal error (a step over --step-timeout,
// no coordinator ever seen, NATS closed for good); 2 on bad flags.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	sc "github.com/gptoss/server/shared/config"
	"github.com/gptoss/server/shared/logging"
	"github.com/gptoss/server/shared/plugin"
	"github.com/gptoss/server/worker/service"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// envPrefix prefixes the environment variable of every flag.
const envPrefix = "GPTOSS_WORKER_"

// settings is everything the command reads: the service's options and
// the logger's.
type settings struct {
	service.Options
	LogLevel  string
	LogFormat string
}

func defaults() settings {
	return settings{
		Options: service.Options{
			NATSURL: "nats://127.0.0.1:4222", Deployment: "default", WorldSize: 1,
			Heartbeat: time.Second, CoordinatorTimeout: 10 * time.Second, StepTimeout: 60 * time.Second,
			Backend: service.BackendCPU, GPUMemoryUtilization: 0.9, LoadFormat: service.LoadAuto, CPUKernels: service.CPUKernelsExact, Version: version,
		},
		LogLevel: "info", LogFormat: "auto",
	}
}

// table is the worker's settings for shared/config.
var table = &sc.Table[settings]{
	Program:   "worker",
	EnvPrefix: envPrefix,
	Settings: []sc.Setting[settings]{
		{Name: "nats-url", Usage: "NATS server URL (several comma-separated; default nats://127.0.0.1:4222)", Set: sc.String(func(s *settings) *string { return &s.NATSURL })},
		{Name: "nats-token", Aliases: []string{"GPTOSS_NATS_TOKEN"}, Usage: "NATS authentication token", Set: sc.String(func(s *settings) *string { return &s.NATSToken })},
		{Name: "deployment", Usage: "deployment name: the NATS subject namespace shared with the coordinator (default \"default\")", Set: sc.String(func(s *settings) *string { return &s.Deployment })},
		{Name: "rank", Usage: "this worker's rank in the tensor-parallel group (default 0)", Set: sc.Int(func(s *settings) *int { return &s.Rank })},
		{Name: "world-size", Usage: "number of ranks in the tensor-parallel group (default 1)", Set: sc.Int(func(s *settings) *int { return &s.WorldSize })},
		{Name: "worker-id", Usage: "worker id reported to the coordinator (default hostname-pid-rank)", Set: sc.String(func(s *settings) *string { return &s.WorkerID })},
		{Name: "heartbeat", Usage: "interval between heartbeats (default 1s)", Set: sc.Duration(func(s *settings) *time.Duration { return &s.Heartbeat })},
		{Name: "coordinator-timeout", Usage: "exit when the coordinator's heartbeat is silent this long, or never arrives within 3x this after start (default 10s)", Set: sc.Duration(func(s *settings) *time.Duration { return &s.CoordinatorTimeout })},
		{Name: "step-timeout", Usage: "watchdog: a step running past its deadline (sent with the step by the coordinator, scaled with its tokens; else this) is reported failed and the worker exits with status 1 (default 1m0s)", Set: sc.Duration(func(s *settings) *time.Duration { return &s.StepTimeout })},
		{Name: "log-level", Usage: "log level: debug, info, warn, error (default info)", Set: sc.String(func(s *settings) *string { return &s.LogLevel })},
		{Name: "log-format", Usage: "log format: json, console or auto (console on a terminal; the default)", Set: sc.String(func(s *settings) *string { return &s.LogFormat })},
		{Name: "backend", Usage: "what runs the model: cpu (the default), or cuda (the kernels library and a GPU)", Set: sc.OneOf(func(s *settings) *string { return &s.Backend }, service.BackendCPU, service.BackendCUDA)},
		{Name: "kernels", Usage: "path of libgptoss_kernels.so for --backend cuda (default: $GPTOSS_KERNELS, else build/ and bin/ next to the executable and the working directory)", Set: sc.String(func(s *settings) *string { return &s.Kernels })},
		{Name: "gpu-memory-utilization", Usage: "fraction of the GPU memory free after the weights that the KV cache takes when a load does not size it (default 0.9)", Set: sc.Float(func(s *settings) *float64 { return &s.GPUMemoryUtilization })},
		{Name: "nccl", Usage: "with --backend cuda and world size 1, still join a (one-rank) NCCL communicator", Set: sc.Bool(func(s *settings) *bool { return &s.NCCL }), Bool: true},
		{Name: "cuda-graphs", Usage: "with --backend cuda, capture decode steps of common batch sizes as CUDA graphs and replay them (off until the GPU check has proven them)", Set: sc.Bool(func(s *settings) *bool { return &s.CUDAGraphs }), Bool: true},
		{Name: "load-format", Usage: "auto (the default): the checkpoint's weights; dummy: random weights of its shapes (the model may then be a preset: 20b, 120b, tiny)", Set: sc.OneOf(func(s *settings) *string { return &s.LoadFormat }, service.LoadAuto, service.LoadDummy)},
		{Name: "cpu-kernels", Usage: "with --backend cpu: exact (the default: float32 products, bit-identical to the tests' reference) or fast (activations rounded to int8 for the MXFP4 experts and bf16 for the dense matrices, as llama.cpp does; needs AVX-512 VNNI and BF16, else that part stays exact)", Set: sc.OneOf(func(s *settings) *string { return &s.CPUKernels }, service.CPUKernelsExact, service.CPUKernelsFast)},
		{Name: "pprof-addr", Usage: "serve net/http/pprof on this loopback host:port, e.g. 127.0.0.1:6061 (default: off; other hosts are refused)", Set: sc.String(func(s *settings) *string { return &s.PprofAddr })},
	},
}

// parseConfig reads the settings from args and the environment (through
// getenv); usage and flag errors go to out. The result is validated.
func parseConfig(args []string, getenv func(string) string, out io.Writer) (settings, error) {
	s, _, err := table.Load(args, getenv, out, defaults())
	if err != nil {
		return s, err
	}
	if v := getenv(envPrefix + "PARENT_PID"); v != "" {
		pid, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || pid < 1 {
			return s, fmt.Errorf("config: environment %sPARENT_PID=%q: not a process id", envPrefix, v)
		}
		s.ParentPID = pid
	}
	if s.WorkerID == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "worker"
		}
		s.WorkerID = fmt.Sprintf("%s-%d-%d", host, os.Getpid(), s.Rank)
	}
	return s, s.Validate()
}

func main() {
	s, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(2)
	}
	log, err := logging.New(s.LogLevel, s.LogFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(2)
	}
	w, err := service.New(s.Options, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(2)
	}
	// Signals before anything else: a SIGTERM during the connect still
	// drains and exits 0.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	if plugin.IsPlugin() {
		// Launched by the coordinator through go-plugin: the NATS service
		// runs beside the plugin's gRPC service, and the process ends when
		// the NATS service does (the host's kill ends it too).
		go func() {
			code := w.Run(sigs)
			_ = log.Sync()
			os.Exit(code)
		}()
		plugin.Serve(w, hclog.NewNullLogger())
		_ = log.Sync()
		os.Exit(0)
	}
	code := w.Run(sigs)
	_ = log.Sync()
	os.Exit(code)
}
