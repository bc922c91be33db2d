package main

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gptoss/server/coordinator/cluster"
	"github.com/gptoss/server/coordinator/sched"
	"github.com/gptoss/server/coordinator/stats"
)

// registerEngineMetrics registers what /metrics reads from the engine at
// scrape time: the KV cache under vLLM's names, and the per-worker
// series. coordinator/stats knows neither the scheduler nor the cluster;
// these adapters hand it their numbers in its own types. workers is the
// engine's worker list (nil with the mock, which has none).
func registerEngineMetrics(reg prometheus.Registerer, model string, sch *sched.Scheduler, workers func() any) error {
	kv := func() (stats.KV, bool) {
		u := sch.KV()
		if u == nil {
			return stats.KV{}, false
		}
		return stats.KV{BlockSize: u.Geometry.BlockSize, Blocks: u.Geometry.Blocks, UsedBlocks: u.UsedBlocks,
			PrefixLookups: u.PrefixLookups, PrefixHits: u.PrefixHits}, true
	}
	if err := reg.Register(stats.NewKVCollector(model, kv)); err != nil {
		return fmt.Errorf("registering the KV cache metrics: %w", err)
	}
	list := func() []stats.Worker {
		if workers == nil {
			return nil
		}
		ws, _ := workers().([]cluster.WorkerStatus)
		if len(ws) == 0 {
			return nil
		}
		u, _ := kv()
		out := make([]stats.Worker, len(ws))
		for i, w := range ws {
			out[i] = stats.Worker{
				Rank: w.Rank, Device: w.Device, MemoryTotal: w.MemoryTotal, MemoryUsed: w.MemoryUsed,
				State: w.State, Lost: w.Lost, Steps: w.Steps, StepTime: w.StepTime, LastStep: w.LastStep, IdleTime: w.IdleTime,
				Sequences: w.Sequences, Restarts: w.Restarts, LoadBytesDone: w.LoadBytesDone, LoadBytesTotal: w.LoadBytesTotal,
				// Every rank holds the scheduler's block tables.
				KVBlocks: u.Blocks, KVBlocksUsed: u.UsedBlocks,
			}
		}
		return out
	}
	if err := reg.Register(stats.NewWorkerCollector(list)); err != nil {
		return fmt.Errorf("registering the worker metrics: %w", err)
	}
	return nil
}
