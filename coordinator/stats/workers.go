package stats

import (
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Worker is one worker process as the coordinator last heard of it, for
// the per-worker series. It is stats' own type, filled by the coordinator
// from its cluster's view, so that stats does not depend on the cluster
// (which depends on NATS and the launcher) to describe it.
type Worker struct {
	// Rank is the worker's tensor-parallel rank; Device what it runs on
	// ("cpu", or the GPU's name).
	Rank   int
	Device string
	// MemoryTotal and MemoryUsed are the device's memory, in bytes, as of
	// the worker's last report (0: not reported).
	MemoryTotal, MemoryUsed uint64
	// State is the worker's reported state ("registered", "starting",
	// "loading", "ready", "draining", "failed"); Lost overrides it with
	// "lost" when its heartbeats stopped.
	State string
	Lost  bool
	// Steps is the steps the worker ran; StepTime their time in all, and
	// LastStep the last forward pass's, on the worker's clock (0: not
	// reported).
	Steps    uint64
	StepTime time.Duration
	LastStep time.Duration
	// IdleTime is the time the worker waited between forward steps.
	IdleTime time.Duration
	// Sequences is the sequences the worker holds state for.
	Sequences int
	// Restarts is how often the launcher restarted this rank.
	Restarts int
	// LoadBytesDone and LoadBytesTotal are the weight load's progress
	// while the worker loads (0 otherwise).
	LoadBytesDone, LoadBytesTotal int64
	// KVBlocks and KVBlocksUsed are the worker's paged KV cache: the
	// scheduler keeps one block table for all ranks, so every rank holds
	// the same blocks (of its shard of the heads). 0 blocks: not known,
	// and the two series are left out.
	KVBlocks, KVBlocksUsed int
}

// workerStates are the states gptoss_worker_state always reports (0 or 1)
// for each worker, so that a dashboard can graph each state's count.
var workerStates = []string{"registered", "starting", "loading", "ready", "draining", "failed", "lost"}

// workerCollector exports the workers as gauges and counters labelled
// rank and device, read at scrape time: the heartbeats already keep the
// coordinator's view current, and a collector needs no bookkeeping when a
// worker comes or goes.
type workerCollector struct {
	workers func() []Worker

	memTotal, memUsed, kvBlocks, kvUsed      *prometheus.Desc
	steps, stepSeconds, lastStep, sequences  *prometheus.Desc
	idleSeconds                              *prometheus.Desc
	state, restarts, loadedBytes, totalBytes *prometheus.Desc
}

// NewWorkerCollector returns the collector of the per-worker series; workers
// lists the workers now (nil or empty: none, as with the mock engine).
func NewWorkerCollector(workers func() []Worker) prometheus.Collector {
	labels := []string{"rank", "device"}
	desc := func(name, help string, extra ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, append(slices.Clone(labels), extra...), nil)
	}
	return &workerCollector{
		workers:     workers,
		memTotal:    desc("gptoss_worker_memory_total_bytes", "The worker's device memory (the machine's on cpu), as of its last report."),
		memUsed:     desc("gptoss_worker_memory_used_bytes", "The worker's device memory in use (the machine's on cpu), as of its last report."),
		kvBlocks:    desc("gptoss_worker_kv_blocks", "KV cache blocks the worker holds (the full-attention pool; the scheduler's block tables span every rank)."),
		kvUsed:      desc("gptoss_worker_kv_blocks_used", "KV cache blocks held by running sequences (blocks held only by the prefix cache count as free)."),
		steps:       desc("gptoss_worker_steps_total", "Steps the worker ran."),
		stepSeconds: desc("gptoss_worker_step_seconds_total", "Time the worker spent in steps; over gptoss_worker_steps_total, the mean step time."),
		idleSeconds: desc("gptoss_worker_idle_seconds_total", "Time the worker waited between forward steps for the coordinator; under load, rate() of it over rate() of gptoss_worker_step_seconds_total is the serving loop's bubble."),
		lastStep:    desc("gptoss_worker_last_step_seconds", "Time the worker's last step that ran sequences (a forward pass) took."),
		sequences:   desc("gptoss_worker_sequences", "Sequences the worker holds state for."),
		state:       desc("gptoss_worker_state", "1 for the worker's current state, 0 for the others; lost: its heartbeats stopped.", "state"),
		restarts:    desc("gptoss_worker_restarts_total", "Times the launcher restarted the worker of this rank."),
		loadedBytes: desc("gptoss_worker_weights_loaded_bytes", "Bytes of the checkpoint's tensors the worker has read, while it loads (0 otherwise)."),
		totalBytes:  desc("gptoss_worker_weights_bytes", "Bytes of the checkpoint's tensors the worker loads, while it loads (0 otherwise)."),
	}
}

// Describe implements prometheus.Collector.
func (c *workerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.memTotal, c.memUsed, c.kvBlocks, c.kvUsed, c.steps, c.stepSeconds, c.idleSeconds,
		c.lastStep, c.sequences, c.state, c.restarts, c.loadedBytes, c.totalBytes} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *workerCollector) Collect(ch chan<- prometheus.Metric) {
	if c.workers == nil {
		return
	}
	seen := map[int]bool{}
	for _, w := range c.workers() {
		// One series per rank: a registry refuses a scrape with two
		// series of one name and label set.
		if seen[w.Rank] {
			continue
		}
		seen[w.Rank] = true
		rank, dev := strconv.Itoa(w.Rank), w.Device
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, rank, dev)
		}
		counter := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, rank, dev)
		}
		gauge(c.memTotal, float64(w.MemoryTotal))
		gauge(c.memUsed, float64(w.MemoryUsed))
		if w.KVBlocks > 0 {
			gauge(c.kvBlocks, float64(w.KVBlocks))
			gauge(c.kvUsed, float64(w.KVBlocksUsed))
		}
		counter(c.steps, float64(w.Steps))
		counter(c.stepSeconds, w.StepTime.Seconds())
		counter(c.idleSeconds, w.IdleTime.Seconds())
		gauge(c.lastStep, w.LastStep.Seconds())
		gauge(c.sequences, float64(w.Sequences))
		counter(c.restarts, float64(w.Restarts))
		gauge(c.loadedBytes, float64(w.LoadBytesDone))
		gauge(c.totalBytes, float64(w.LoadBytesTotal))

		cur := w.State
		if w.Lost {
			cur = "lost"
		}
		known := false
		for _, s := range workerStates {
			v := 0.0
			if s == cur {
				v, known = 1, true
			}
			ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, v, rank, dev, s)
		}
		if !known && kindLabel(cur) {
			// A state this list does not know yet (a newer worker):
			// still shown, as itself.
			ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, 1, rank, dev, cur)
		}
	}
}
