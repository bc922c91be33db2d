// Command cpubench times the CPU engine on a checkpoint the way a worker
// runs it, without the coordinator, NATS or HTTP in the way: prefill of one
// long prompt, batch-1 decode, and decode with several sequences stepped
// together. It exists for the side-by-side comparison with llama.cpp
// (scripts/bench-llamacpp.sh, issue 18), whose llama-bench and
// llama-batched-bench measure the same three things on the same lengths.
//
// The model is loaded as worker/service loads it for the CPU backend
// (memory-mapped safetensors, engine.LoadWeights, a paged KV cache,
// engine.Model with ReuseLogits) and stepped through worker/local's
// Executor with greedy sampling, so a step costs what it costs in serving:
// the forward pass, the unembedding of each sampling row and the sampler.
// The engine uses every core (GOMAXPROCS).
//
//   - prefill: one sequence of -prefill tokens from position 0, in steps of
//     at most -chunk tokens (a profile's prefill_chunk: 512 in
//     latency_first, so 512 tokens are one step); the last step samples.
//     tok/s = prefill tokens / time of all its steps.
//   - decode: one sequence, -decode steps of one token from position 0 (as
//     llama-bench's tg test), each token the greedy pick of the step before.
//     tok/s = steps / time.
//   - streams B: B sequences each prefilled with -prompt tokens (one step,
//     untimed), then -stream-decode steps of B tokens together (as
//     llama-batched-bench's -npp/-ntg/-npl). tok/s = B × steps / time.
//
// Token ids are pseudo-random ordinary ids (random weights have no text).
// Before timing, -warmup reads the checkpoint files once (so the page cache
// holds them) and runs a short untimed step.
//
//	go run ./scripts/cpubench -model build/llamacpp/model-20b -prefill 512 -decode 64 -streams 1,4,8
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/shared/step"
	"github.com/gptoss/server/worker/engine"
	"github.com/gptoss/server/worker/local"
	"github.com/gptoss/server/worker/safetensors"
)

const blockSize = 16 // the worker's default

// Result is one measurement.
type Result struct {
	Metric  string  `json:"metric"`            // prefill, decode, streams
	Streams int     `json:"streams,omitempty"` // sequences stepped together
	Tokens  int     `json:"tokens"`            // tokens timed (all sequences)
	Steps   int     `json:"steps"`             // engine steps timed
	Seconds float64 `json:"seconds"`
	TokS    float64 `json:"tok_s"`
}

// Report is the -json output.
type Report struct {
	Model       string   `json:"model"`
	Threads     int      `json:"threads"` // GOMAXPROCS
	Chunk       int      `json:"chunk"`
	Prompt      int      `json:"prompt"` // each stream's prompt
	LoadSeconds float64  `json:"load_seconds"`
	PeakRSSMiB  float64  `json:"peak_rss_mib"`
	Results     []Result `json:"results"`
}

type bench struct {
	ex    *local.Executor
	alloc *engine.Allocator
	vocab int
	rng   *rand.Rand
	id    uint64
	steps int // steps run, for -v
}

func main() {
	dir := flag.String("model", "models/tiny", "checkpoint directory (config.json + safetensors)")
	prefill := flag.Int("prefill", 512, "prompt tokens of the prefill test (0 skips it)")
	chunk := flag.Int("chunk", 512, "most prompt tokens per step (a profile's prefill_chunk)")
	decode := flag.Int("decode", 64, "decode steps of the batch-1 test (0 skips it)")
	streams := flag.String("streams", "1,4,8", "parallel sequence counts of the streams test (empty skips it)")
	prompt := flag.Int("prompt", 128, "prompt tokens of each stream (prefilled untimed)")
	streamDecode := flag.Int("stream-decode", 32, "decode steps of the streams test")
	warmup := flag.Bool("warmup", true, "read the checkpoint into the page cache and run a short step before timing")
	asJSON := flag.Bool("json", false, "print one JSON report instead of text")
	kernels := flag.String("kernels", "exact", "CPU kernels: exact or fast (int8 MXFP4 experts, bf16 dense products; engine.CPUOptions)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the timed tests (not the load) to this file, for go tool pprof")
	flag.Parse()
	levels, err := parseList(*streams)
	if err != nil || *prefill < 0 || *decode < 0 || *chunk < 1 || *prompt < 1 || *streamDecode < 1 {
		fmt.Fprintln(os.Stderr, "cpubench: bad flags:", err)
		os.Exit(2)
	}
	// KV blocks for the largest test; the sequences of a test are freed
	// before the next.
	need := blocks(max(*prefill, *decode, 8))
	for _, b := range levels {
		need = max(need, b*blocks(*prompt+*streamDecode))
	}
	logf := func(format string, a ...any) {
		if !*asJSON {
			fmt.Printf(format, a...)
		} else {
			fmt.Fprintf(os.Stderr, format, a...)
		}
	}

	t0 := time.Now()
	if *kernels != "exact" && *kernels != "fast" {
		fmt.Fprintf(os.Stderr, "cpubench: -kernels %q: want exact or fast\n", *kernels)
		os.Exit(2)
	}
	b, err := load(*dir, need, *warmup, *kernels == "fast", logf)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cpubench:", err)
		os.Exit(1)
	}
	rep := Report{Model: *dir, Threads: runtime.GOMAXPROCS(0), Chunk: *chunk, Prompt: *prompt,
		LoadSeconds: time.Since(t0).Seconds()}
	logf("loaded %s in %.1f s (%d threads)\n", *dir, rep.LoadSeconds, rep.Threads)
	if *warmup {
		if _, err := b.prefill(16, 16); err != nil {
			fmt.Fprintln(os.Stderr, "cpubench: warm-up:", err)
			os.Exit(1)
		}
	}
	add := func(r Result, err error) {
		if err != nil {
			fmt.Fprintf(os.Stderr, "cpubench: %s: %v\n", r.Metric, err)
			os.Exit(1)
		}
		rep.Results = append(rep.Results, r)
		name := r.Metric
		if r.Metric == "streams" {
			name = fmt.Sprintf("streams=%d", r.Streams)
		}
		logf("%-12s %6d tokens %4d steps %8.2f s %9.2f tok/s\n", name, r.Tokens, r.Steps, r.Seconds, r.TokS)
	}
	if *cpuProfile != "" {
		// Where a step's time goes: the remaining gap to llama.cpp is
		// explained with this profile (docs/performance.md).
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "cpubench: cpu profile:", err)
			os.Exit(1)
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	if *prefill > 0 {
		add(b.prefill(*prefill, *chunk))
	}
	if *decode > 0 {
		add(b.decode(*decode))
	}
	for _, n := range levels {
		add(b.streams(n, *prompt, *streamDecode))
	}
	rep.PeakRSSMiB = peakRSS()
	logf("peak RSS %.0f MiB\n", rep.PeakRSSMiB)
	if *asJSON {
		out, _ := json.MarshalIndent(rep, "", "  ")
		fmt.Println(string(out))
	}
}

// load opens the checkpoint as the worker's CPU load path does.
func load(dir string, kvBlocks int, warm, fast bool, logf func(string, ...any)) (*bench, error) {
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	if warm {
		t := time.Now()
		n, err := readAll(set.Files())
		if err != nil {
			return nil, err
		}
		logf("page cache: read %.1f GB in %.1f s (untimed)\n", float64(n)/1e9, time.Since(t).Seconds())
	}
	w, err := engine.LoadWeights(cfg, set)
	if err != nil {
		return nil, err
	}
	cc := w.CacheConfig()
	// One pool for both kinds of layer (the sequences' tables serve both).
	cache, err := engine.NewKVCache(&cc, kvBlocks, 0, blockSize)
	if err != nil {
		return nil, err
	}
	m, err := engine.NewModelOn(engine.NewCPUWith(w, cache, nil, engine.CPUOptions{Fast: fast}))
	if err != nil {
		return nil, err
	}
	m.ReuseLogits = true // as the worker runs it
	return &bench{ex: local.New(m, &w.Config), alloc: engine.NewAllocator(kvBlocks), vocab: cfg.Vocab,
		rng: rand.New(rand.NewPCG(1, 2))}, nil
}

// readAll reads files start to end, so that their pages are in the cache.
func readAll(paths []string) (int64, error) {
	var total int64
	buf := make([]byte, 4<<20)
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return total, err
		}
		n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf)
		f.Close()
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func blocks(tokens int) int { return (tokens + blockSize - 1) / blockSize }

// tokens returns n pseudo-random ordinary token ids.
func (b *bench) tokens(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = b.rng.IntN(min(b.vocab, 199998))
	}
	return out
}

// newSeqs starts n sequences with room for length tokens each.
func (b *bench) newSeqs(n, length int) ([]step.Seq, error) {
	seqs := make([]step.Seq, n)
	for i := range seqs {
		table, err := b.alloc.Grow(nil, length, blockSize)
		if err != nil {
			return nil, err
		}
		b.id++
		seqs[i] = step.Seq{ID: b.id, Blocks: table, Sampling: &step.Sampling{Temperature: 0, TopP: 1}}
	}
	return seqs, nil
}

func (b *bench) release(seqs []step.Seq) {
	ids := make([]uint64, len(seqs))
	for i := range seqs {
		ids[i] = seqs[i].ID
		b.alloc.Free(seqs[i].Blocks)
	}
	b.ex.Release(ids)
}

// run steps the batch once and checks every sequence's result.
func (b *bench) run(seqs []step.Seq) error {
	b.steps++
	if err := b.ex.Step(context.Background(), &step.Batch{Seqs: seqs}); err != nil {
		return err
	}
	for i := range seqs {
		if seqs[i].Err != nil {
			return seqs[i].Err
		}
	}
	return nil
}

// advance moves each sequence past the tokens it just ran and feeds it the
// token it sampled.
func advance(seqs []step.Seq) {
	for i := range seqs {
		s := &seqs[i]
		s.Pos += len(s.Tokens)
		s.Tokens, s.Sample, s.Sampling = []int{s.Out.ID}, true, nil
	}
}

func (b *bench) prefill(n, chunk int) (Result, error) {
	r := Result{Metric: "prefill", Tokens: n}
	seqs, err := b.newSeqs(1, n)
	if err != nil {
		return r, err
	}
	defer b.release(seqs)
	prompt := b.tokens(n)
	t := time.Now()
	for pos := 0; pos < n; pos += chunk {
		end := min(n, pos+chunk)
		seqs[0].Tokens, seqs[0].Pos, seqs[0].Sample = prompt[pos:end], pos, end == n
		if err := b.run(seqs); err != nil {
			return r, err
		}
		r.Steps++
	}
	r.Seconds = time.Since(t).Seconds()
	r.TokS = float64(n) / r.Seconds
	return r, nil
}

func (b *bench) decode(n int) (Result, error) {
	r := Result{Metric: "decode", Tokens: n, Steps: n}
	seqs, err := b.newSeqs(1, n)
	if err != nil {
		return r, err
	}
	defer b.release(seqs)
	seqs[0].Tokens, seqs[0].Sample = b.tokens(1), true
	t := time.Now()
	for i := range n {
		if err := b.run(seqs); err != nil {
			return r, err
		}
		if i < n-1 {
			advance(seqs)
		}
	}
	r.Seconds = time.Since(t).Seconds()
	r.TokS = float64(n) / r.Seconds
	return r, nil
}

func (b *bench) streams(n, prompt, steps int) (Result, error) {
	r := Result{Metric: "streams", Streams: n, Tokens: n * steps, Steps: steps}
	seqs, err := b.newSeqs(n, prompt+steps)
	if err != nil {
		return r, err
	}
	defer b.release(seqs)
	for i := range seqs {
		seqs[i].Tokens, seqs[i].Sample = b.tokens(prompt), true
	}
	if err := b.run(seqs); err != nil { // the prompts, untimed
		return r, err
	}
	advance(seqs)
	t := time.Now()
	for i := range steps {
		if err := b.run(seqs); err != nil {
			return r, err
		}
		if i < steps-1 {
			advance(seqs)
		}
	}
	r.Seconds = time.Since(t).Seconds()
	r.TokS = float64(r.Tokens) / r.Seconds
	return r, nil
}

func parseList(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("stream count %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// peakRSS is the process's peak resident set (VmHWM) in MiB, 0 if unknown.
// The checkpoint's mapped pages count in it once touched.
func peakRSS() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}
