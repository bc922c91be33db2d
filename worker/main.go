// Command worker is one gpt-oss worker process: one per device. It
// connects to NATS, registers with the coordinator of its deployment,
// heartbeats, loads its model when told to and runs the forward steps the
// coordinator broadcasts, replying with the sampled tokens (rank 0). It
// exits when the coordinator goes away, when its parent dies, on a
// "shutdown" control message and on SIGTERM/SIGINT.
//
//	worker --nats-url nats://127.0.0.1:4222 --deployment default --rank 0 --world-size 1
//
// With --backend cuda the model runs on the GPU through the kernels
// library (make kernels; docs/cuda.md), opened at load time: a worker
// without it still starts, registers and answers the Load with the error.
// --load-format dummy serves random weights of real shapes (the Load's
// model may then be a preset: 20b, 120b, tiny) for benchmarks without the
// checkpoint files.
//
// Every flag also reads GPTOSS_WORKER_<NAME> from the environment (dashes
// become underscores); --nats-token also reads GPTOSS_NATS_TOKEN. Flags
// win over the environment. Logs go to stderr; stdout stays empty.
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
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/gptoss/server/shared/logging"
	"github.com/gptoss/server/shared/plugin"
	"github.com/gptoss/server/shared/wire"
	"github.com/gptoss/server/worker/gpucheck"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// envPrefix prefixes the environment variable of every flag.
const envPrefix = "GPTOSS_WORKER_"

// config is the worker's settings.
type config struct {
	NATSURL            string
	NATSToken          string
	Deployment         string
	Rank               int
	WorldSize          int
	WorkerID           string
	Heartbeat          time.Duration
	CoordinatorTimeout time.Duration
	StepTimeout        time.Duration
	LogLevel           string
	LogFormat          string
	// Backend runs the model on "cpu" or "cuda"; Kernels names the CUDA
	// kernels library ("" searches, see worker/cuda Open);
	// GPUMemoryUtilization is the fraction of free GPU memory the KV cache
	// takes when a Load leaves its size 0; NCCL joins a one-rank NCCL
	// communicator at world size 1 (the collective path on one GPU).
	Backend              string
	Kernels              string
	GPUMemoryUtilization float64
	NCCL                 bool
	CUDAGraphs           bool
	// LoadFormat is "auto" (the checkpoint's weights) or "dummy" (random
	// weights of its shapes, or of a preset named instead of a directory).
	LoadFormat string
	// ParentPID, from GPTOSS_WORKER_PARENT_PID (the launcher's pid), makes
	// the worker exit when its parent process changes; 0 when unset.
	ParentPID int
}

// envName is the environment variable of flag name.
func envName(name string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// parseConfig reads the settings from args and the environment (through
// getenv); usage and flag errors go to out.
func parseConfig(args []string, getenv func(string) string, out io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&c.NATSURL, "nats-url", "nats://127.0.0.1:4222", "NATS server URL (several comma-separated)")
	fs.StringVar(&c.NATSToken, "nats-token", "", "NATS authentication token (env also GPTOSS_NATS_TOKEN)")
	fs.StringVar(&c.Deployment, "deployment", "default", "deployment name: the NATS subject namespace shared with the coordinator")
	fs.IntVar(&c.Rank, "rank", 0, "this worker's rank in the tensor-parallel group")
	fs.IntVar(&c.WorldSize, "world-size", 1, "number of ranks in the tensor-parallel group")
	fs.StringVar(&c.WorkerID, "worker-id", "", "worker id reported to the coordinator (default hostname-pid-rank)")
	fs.DurationVar(&c.Heartbeat, "heartbeat", time.Second, "interval between heartbeats")
	fs.DurationVar(&c.CoordinatorTimeout, "coordinator-timeout", 10*time.Second,
		"exit when the coordinator's heartbeat is silent this long (or never arrives within 3x this after start)")
	fs.DurationVar(&c.StepTimeout, "step-timeout", 60*time.Second,
		"watchdog: a step running longer is reported failed and the worker exits with status 1")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&c.LogFormat, "log-format", "auto", "log format: json, console or auto (console on a terminal)")
	fs.StringVar(&c.Backend, "backend", backendCPU, "what runs the model: cpu, or cuda (the kernels library and a GPU)")
	fs.StringVar(&c.Kernels, "kernels", "", "path of libgptoss_kernels.so for --backend cuda (default: $GPTOSS_KERNELS, else build/ and bin/ next to the executable and the working directory)")
	fs.Float64Var(&c.GPUMemoryUtilization, "gpu-memory-utilization", 0.9,
		"fraction of the GPU memory free after the weights that the KV cache takes when a load does not size it")
	fs.BoolVar(&c.NCCL, "nccl", false, "with --backend cuda and world size 1, still join a (one-rank) NCCL communicator")
	fs.BoolVar(&c.CUDAGraphs, "cuda-graphs", false, "with --backend cuda, capture decode steps of common batch sizes as CUDA graphs and replay them (off until the GPU check has proven them)")
	fs.StringVar(&c.LoadFormat, "load-format", loadAuto,
		"auto: the checkpoint's weights; dummy: random weights of its shapes (the model may then be a preset: 20b, 120b, tiny)")
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: worker [flags]\n\nEvery flag also reads %s<NAME> (flags win).\n\n", envPrefix)
		fs.PrintDefaults()
	}

	// The environment first, so that flags on the command line win.
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		names := []string{envName(f.Name)}
		if f.Name == "nats-token" {
			names = append(names, "GPTOSS_NATS_TOKEN")
		}
		for _, n := range names {
			v := getenv(n)
			if v == "" {
				continue
			}
			if err := f.Value.Set(v); err != nil && envErr == nil {
				envErr = fmt.Errorf("%s: %v", n, err)
			}
			break
		}
	})
	if envErr != nil {
		return c, envErr
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if v := getenv(envPrefix + "PARENT_PID"); v != "" {
		var pid int
		if _, err := fmt.Sscan(v, &pid); err != nil || pid < 1 {
			return c, fmt.Errorf("%sPARENT_PID=%q: not a process id", envPrefix, v)
		}
		c.ParentPID = pid
	}
	switch {
	case c.WorldSize < 1:
		return c, fmt.Errorf("--world-size %d: must be at least 1", c.WorldSize)
	case c.Rank < 0 || c.Rank >= c.WorldSize:
		return c, fmt.Errorf("--rank %d: must be in [0, %d) for --world-size %d", c.Rank, c.WorldSize, c.WorldSize)
	case c.Heartbeat <= 0:
		return c, fmt.Errorf("--heartbeat %s: must be positive", c.Heartbeat)
	case c.CoordinatorTimeout <= 0:
		return c, fmt.Errorf("--coordinator-timeout %s: must be positive", c.CoordinatorTimeout)
	case c.StepTimeout <= 0:
		return c, fmt.Errorf("--step-timeout %s: must be positive", c.StepTimeout)
	case c.NATSURL == "":
		return c, fmt.Errorf("--nats-url is empty")
	case c.Backend != backendCPU && c.Backend != backendCUDA:
		return c, fmt.Errorf("--backend %q: want cpu or cuda", c.Backend)
	case !(c.GPUMemoryUtilization > 0 && c.GPUMemoryUtilization <= 1):
		return c, fmt.Errorf("--gpu-memory-utilization %g: want a fraction in (0, 1]", c.GPUMemoryUtilization)
	case c.LoadFormat != loadAuto && c.LoadFormat != loadDummy:
		return c, fmt.Errorf("--load-format %q: want auto or dummy", c.LoadFormat)
	case c.NCCL && c.Backend != backendCUDA:
		return c, errors.New("--nccl needs --backend cuda")
	}
	if _, err := wire.NewSubjects(c.Deployment); err != nil {
		return c, fmt.Errorf("--deployment: %w", err)
	}
	if c.WorkerID == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "worker"
		}
		c.WorkerID = fmt.Sprintf("%s-%d-%d", host, os.Getpid(), c.Rank)
	}
	return c, nil
}

func main() {
	// worker gpu-check: the device check of the CUDA backend (scripts/gpu-check).
	if len(os.Args) > 1 && os.Args[1] == "gpu-check" {
		os.Exit(gpucheck.Main(os.Args[2:]))
	}
	c, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(2)
	}
	log, err := logging.New(c.LogLevel, c.LogFormat)
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(2)
	}
	w := newWorker(c, log)
	if plugin.IsPlugin() {
		// Launched by the coordinator through go-plugin: the NATS worker
		// runs beside the plugin's gRPC service, and the process ends when
		// the worker does (the host's kill ends it too).
		go func() {
			code := w.run()
			_ = log.Sync()
			os.Exit(code)
		}()
		plugin.Serve(pluginService{w}, hclog.NewNullLogger())
		_ = log.Sync()
		os.Exit(0)
	}
	code := w.run()
	_ = log.Sync()
	os.Exit(code)
}
