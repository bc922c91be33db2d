package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"
)

// Level is the summary of one sweep point: a concurrency level or a rate.
type Level struct {
	// Concurrency is the number of clients (concurrency mode; 0 in rate
	// mode, where Rate describes the point).
	Concurrency   int        `json:"concurrency,omitempty"`
	Rate          *RateStats `json:"rate,omitempty"`
	Requests      int        `json:"requests"`
	Errors        int        `json:"errors"`
	ErrorRate     float64    `json:"error_rate"`
	DurationS     float64    `json:"duration_s"`
	RequestsPerS  float64    `json:"requests_per_s"`
	OutputTokPerS float64    `json:"output_tokens_per_s"`
	// OutputTokens is the successful requests' generated tokens: the
	// server's usage.completion_tokens where it reported them (UsageReported
	// requests), else the text events.
	OutputTokens  int `json:"output_tokens"`
	UsageReported int `json:"usage_reported"`
	// PromptTokensMean and CompletionTokensMean are the means of the
	// server's usage over the requests that reported it: the prompt as the
	// model saw it (chat template included), and the generated length.
	PromptTokensMean     float64 `json:"prompt_tokens_mean,omitempty"`
	CompletionTokensMean float64 `json:"completion_tokens_mean,omitempty"`
	TTFTms               Pcts    `json:"ttft_ms"`
	ITLms                Pcts    `json:"itl_ms"`
	E2Ems                Pcts    `json:"e2e_ms"`
	AddedITLms           *Pcts   `json:"added_itl_ms,omitempty"`
	// ServerITLms is the server's own view (GET /stats): gaps between the
	// writes of consecutive tokens, before the network and the client.
	ServerITLms *Pcts `json:"server_itl_ms,omitempty"`
	// StreamDelayms is the server's time from the scheduler's delivery of a
	// token to the write of its event (GET /stats stream_delay_seconds).
	StreamDelayms    *Pcts `json:"stream_delay_ms,omitempty"`
	ServerAddedITLms *Pcts `json:"server_added_itl_ms,omitempty"`
	// EngineStepMs is the mean time the engine spent per step during the
	// level (gptoss_step_duration_seconds from /metrics). When known, the
	// added latencies are measured against it rather than --expected-itl.
	EngineStepMs float64 `json:"engine_step_ms,omitempty"`
	ITLSamples   int     `json:"itl_samples"`
	// ErrorsByStatus counts failures by HTTP status ("429", "503", ...) or,
	// for failures without one, by kind: "transport", "timeout",
	// "bad_response", "stream_error", "incomplete_stream".
	ErrorsByStatus map[string]int `json:"errors_by_status,omitempty"`
	FirstErrorText string         `json:"first_error,omitempty"`

	itl   []time.Duration // client-side gaps, for recomputing added latency
	ttftN int             // requests with a first token (streamed ones)
}

// RateStats describes a fixed-rate point: what was asked and what the
// client managed to send.
type RateStats struct {
	OfferedPerS float64 `json:"offered_per_s"`
	Arrival     string  `json:"arrival"`
	// AchievedPerS is the requests sent per second of the arrival window
	// (WindowS: until the last arrival, or the whole --duration). Below
	// OfferedPerS, either arrivals hit the in-flight cap (NotSent) or the
	// client could not keep up.
	AchievedPerS float64 `json:"achieved_per_s"`
	WindowS      float64 `json:"window_s"`
	Arrivals     int     `json:"arrivals"`
	Sent         int     `json:"sent"`
	NotSent      int     `json:"not_sent"`
	MaxInflight  int     `json:"max_inflight"`
	PeakInflight int     `json:"peak_inflight"`
}

// Pcts are percentiles in milliseconds.
type Pcts struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// summarize turns one point's results into its Level; dur is the point's
// wall time, start to the last response.
func summarize(results []result, dur, expected time.Duration) Level {
	lv := Level{Requests: len(results), DurationS: dur.Seconds()}
	var ttft, e2e, itl []time.Duration
	var promptSum, complSum int
	for _, r := range results {
		if !r.ok {
			lv.Errors++
			if lv.ErrorsByStatus == nil {
				lv.ErrorsByStatus = map[string]int{}
			}
			lv.ErrorsByStatus[r.kind]++
			if lv.FirstErrorText == "" {
				lv.FirstErrorText = r.err
			}
			continue
		}
		if r.events > 0 {
			ttft = append(ttft, r.ttft)
		}
		e2e = append(e2e, r.e2e)
		itl = append(itl, r.itl...)
		lv.OutputTokens += r.outputTokens()
		if r.usage {
			lv.UsageReported++
			promptSum += r.promptTokens
			complSum += r.completionTokens
		}
	}
	if lv.UsageReported > 0 {
		lv.PromptTokensMean = float64(promptSum) / float64(lv.UsageReported)
		lv.CompletionTokensMean = float64(complSum) / float64(lv.UsageReported)
	}
	lv.ErrorRate = float64(lv.Errors) / float64(max(1, len(results)))
	if s := dur.Seconds(); s > 0 {
		lv.RequestsPerS = float64(len(results)-lv.Errors) / s
		lv.OutputTokPerS = float64(lv.OutputTokens) / s
	}
	lv.TTFTms, lv.ITLms, lv.E2Ems = pcts(ttft), pcts(itl), pcts(e2e)
	lv.ITLSamples = len(itl)
	lv.itl, lv.ttftN = itl, len(ttft)
	if expected > 0 {
		p := addedPcts(itl, expected)
		lv.AddedITLms = &p
	}
	return lv
}

// addedPcts is the percentiles of the gaps minus the engine's step time.
func addedPcts(itl []time.Duration, step time.Duration) Pcts {
	added := make([]time.Duration, len(itl))
	for i, d := range itl {
		added[i] = d - step
	}
	return pcts(added)
}

// pcts is the nearest-rank percentiles of ds: the q-th is the smallest
// sample with at least a fraction q of the samples at or below it, so every
// reported value is one that was measured. (Rounding the rank to nearest
// instead would report, for 16 samples, the 14th as p90: only 87.5 % at or
// below.)
func pcts(ds []time.Duration) Pcts {
	if len(ds) == 0 {
		return Pcts{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) float64 {
		// The epsilon keeps q·n that should be an integer (0.9·10) from
		// landing just above it in floating point and taking the next rank.
		rank := int(math.Ceil(q*float64(len(s)) - 1e-9))
		return ms(s[min(max(rank-1, 0), len(s)-1)])
	}
	return Pcts{P50: at(0.50), P90: at(0.90), P95: at(0.95), P99: at(0.99), Max: ms(s[len(s)-1])}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// name is the point's label in the tables.
func (lv *Level) name() string {
	if lv.Rate != nil {
		return fmt.Sprintf("rate %g/s", lv.Rate.OfferedPerS)
	}
	return fmt.Sprintf("conc %d", lv.Concurrency)
}

// printLevel writes one point's table: the latency percentiles, then
// throughput, token counts, the rate the client achieved and the errors by
// status. The last line is the original test plan's check (success count
// and QPS).
func printLevel(w io.Writer, lv *Level) {
	fmt.Fprintf(w, "== %s: %d requests, %d errors (%.1f %%), %.2f s\n", lv.name(), lv.Requests, lv.Errors, 100*lv.ErrorRate, lv.DurationS)
	fmt.Fprintf(w, "  %-31s %9s %9s %9s %9s %9s\n", "ms", "p50", "p90", "p95", "p99", "max")
	row := func(name string, p *Pcts, n int, full bool) {
		if p == nil || n == 0 {
			return
		}
		f := func(v float64, ok bool) string {
			if !ok {
				return fmt.Sprintf("%9s", "-")
			}
			return fmt.Sprintf("%9.2f", v)
		}
		fmt.Fprintf(w, "  %-31s %s %s %s %s %s\n", name, f(p.P50, true), f(p.P90, full), f(p.P95, true), f(p.P99, true), f(p.Max, full))
	}
	ok := lv.Requests - lv.Errors
	row("TTFT", &lv.TTFTms, lv.ttftN, true)
	row("ITL", &lv.ITLms, lv.ITLSamples, true)
	row("E2E", &lv.E2Ems, ok, true)
	added := "added ITL, client"
	if lv.EngineStepMs > 0 {
		added = fmt.Sprintf("added ITL, client (step %.2f)", lv.EngineStepMs)
	}
	row(added, lv.AddedITLms, lv.ITLSamples, true)
	row("ITL, server", lv.ServerITLms, 1, false)
	row("added ITL, server", lv.ServerAddedITLms, 1, false)
	row("stream delay, server", lv.StreamDelayms, 1, false)
	fmt.Fprintf(w, "  throughput %.2f req/s, %.1f output tok/s", lv.RequestsPerS, lv.OutputTokPerS)
	if lv.UsageReported > 0 {
		fmt.Fprintf(w, "; mean prompt %.1f tokens, mean output %.1f tokens (usage of %d requests)",
			lv.PromptTokensMean, lv.CompletionTokensMean, lv.UsageReported)
	}
	fmt.Fprintln(w)
	if r := lv.Rate; r != nil {
		fmt.Fprintf(w, "  rate: offered %g/s (%s), achieved %.2f/s over %.2f s; %d arrivals, %d sent, %d not sent (in-flight cap %d, peak %d)\n",
			r.OfferedPerS, r.Arrival, r.AchievedPerS, r.WindowS, r.Arrivals, r.Sent, r.NotSent, r.MaxInflight, r.PeakInflight)
	}
	if lv.Errors > 0 {
		fmt.Fprintf(w, "  errors: %s; first: %s\n", formatCounts(lv.ErrorsByStatus), lv.FirstErrorText)
	}
	fmt.Fprintf(w, "  success %d/%d in %.2f s, QPS %.2f\n", ok, lv.Requests, lv.DurationS, lv.RequestsPerS)
}

// formatCounts writes {"429": 3, "503": 1} as "429 ×3, 503 ×1", in key
// order.
func formatCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s ×%d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// printSummary writes one row per sweep point, for comparing the points at
// a glance.
func printSummary(w io.Writer, levels []Level) {
	fmt.Fprintf(w, "\n%-14s %6s %5s %6s %9s %8s %9s | %-17s | %-17s | %s\n", "point", "reqs", "errs", "err%", "sent/s", "req/s", "tok/s",
		"TTFT ms p50/p99", "ITL ms p50/p99", "E2E ms p50/p99")
	for i := range levels {
		lv := &levels[i]
		sent := "-"
		if lv.Rate != nil {
			sent = fmt.Sprintf("%.2f", lv.Rate.AchievedPerS)
		}
		// pair is two percentiles, or dashes where nothing was measured
		// (TTFT and ITL of plain requests, anything of a point that failed).
		pair := func(a, b float64, n int, prec int) string {
			if n == 0 {
				return fmt.Sprintf("%8s %8s", "-", "-")
			}
			return fmt.Sprintf("%8.*f %8.*f", prec, a, prec, b)
		}
		fmt.Fprintf(w, "%-14s %6d %5d %6.1f %9s %8.2f %9.1f | %s | %s | %s\n",
			lv.name(), lv.Requests, lv.Errors, 100*lv.ErrorRate, sent, lv.RequestsPerS, lv.OutputTokPerS,
			pair(lv.TTFTms.P50, lv.TTFTms.P99, lv.ttftN, 1), pair(lv.ITLms.P50, lv.ITLms.P99, lv.ITLSamples, 2),
			pair(lv.E2Ems.P50, lv.E2Ems.P99, lv.Requests-lv.Errors, 1))
	}
}

// Machine is where the bench ran, so that a JSON file says what its numbers
// belong to.
type Machine struct {
	Hostname  string `json:"hostname"`
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model,omitempty"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
}

func machine() Machine {
	host, _ := os.Hostname()
	return Machine{Hostname: host, CPUs: runtime.NumCPU(), CPUModel: cpuModel(), GoVersion: runtime.Version(),
		OS: runtime.GOOS, Arch: runtime.GOARCH}
}

// cpuModel is the first "model name" of /proc/cpuinfo, or "" off Linux.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
