// Command bench drives an OpenAI-compatible server (the coordinator, or any
// other) and reports what clients see: time to first token, inter-token
// latency (the gap between consecutive content events as received),
// end-to-end latency at p50/p90/p95/p99, request throughput, output tokens
// per second and errors by status, per sweep point.
//
// Two ways to load the server:
//
//	bench --concurrency 1,64,512 --requests 4 --max-tokens 64
//	bench --rate 1,2,4 --duration 60s --arrival poisson --max-inflight 256
//
// The first is a closed loop: each of n clients sends its next request when
// the previous one is done, which measures capacity but lets a slow server
// slow the clients down. The second is an open loop: requests arrive at a
// fixed rate whether or not earlier ones finished, as real traffic does,
// which shows how latency grows with load up to and past saturation.
//
// Prompts are a fixed short one by default (comparable with earlier runs),
// random ones of a given length (--input-len, --input-len-range), or a mix
// of multi-turn chats (--mix chat, built in; --mix file.jsonl). Everything
// random is derived from --seed, so a run can be repeated exactly.
//
// With --expected-itl set to the mock engine's step time, it also reports
// the latency the serving path adds on top of the engine: ITL minus the
// step time. Results print as a table per point and a summary, and with
// --json (or --out) as JSON with the parameters, the machine and the date.
//
// --concurrency 1 --requests 10 --max-tokens 50 --stream=false is the
// original test plan's benchmark.sh: 10 sequential requests, success count
// and QPS.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	code, err := run(os.Args[1:], os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
	}
	os.Exit(code)
}

// config is the parsed command line.
type config struct {
	url, model, endpoint, profile, apiKey string
	levels                                []int
	rates                                 []float64
	arrival                               string
	perClient                             int
	requestsSet                           bool
	duration                              time.Duration
	maxInflight                           int
	maxTokens                             int
	inputLen, inputLenRange               int
	mix                                   string
	seed                                  uint64
	stream, usage, serverStats            bool
	expected, timeout                     time.Duration
	out                                   string
	params                                map[string]string
}

// parseFlags reads the command line. Flags that existed before the rate
// mode keep their names and meanings (scripts/bench-stream.sh, the README
// and docs/performance.md use them); --json and --output-len are aliases
// of --out and --max-tokens under the names the issue asked for.
func parseFlags(args []string, stderr io.Writer) (*config, error) {
	var c config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.url, "url", "http://127.0.0.1:8000", "server base URL")
	fs.StringVar(&c.model, "model", "gpt-oss-20b", "model id")
	levels := fs.String("concurrency", "1,64,512", "comma-separated concurrency levels (closed loop: each client sends its next request when the previous one ends)")
	rates := fs.String("rate", "", "comma-separated request rates per second (open loop, instead of --concurrency); needs --duration or --requests")
	fs.StringVar(&c.arrival, "arrival", "poisson", "arrivals in rate mode: poisson (exponential gaps) or uniform (evenly spaced)")
	fs.IntVar(&c.perClient, "requests", 4, "concurrency mode: requests per client at each level; rate mode: requests at each rate")
	fs.DurationVar(&c.duration, "duration", 0, "how long each point runs (rate mode: arrivals stop after it; concurrency mode without --requests: clients stop starting requests after it)")
	fs.IntVar(&c.maxInflight, "max-inflight", 1024, "rate mode: most requests in flight at once; an arrival above it is not sent and counted as not sent")
	fs.IntVar(&c.maxTokens, "max-tokens", 64, "max_tokens per request (the output length)")
	fs.IntVar(&c.maxTokens, "output-len", 64, "same as --max-tokens")
	fs.IntVar(&c.inputLen, "input-len", 0, "random prompts of about this many tokens (words from a list of one-token words); 0: a fixed short prompt")
	fs.IntVar(&c.inputLenRange, "input-len-range", 0, "with --input-len N: prompt lengths uniform in [N-r, N+r]")
	fs.StringVar(&c.mix, "mix", "", `prompt mix: "chat" (built-in multi-turn conversations, weighted) or a JSONL file of {"prompt": ...} or {"messages": [...]} lines with optional "weight" and "max_tokens"`)
	fs.Uint64Var(&c.seed, "seed", 1, "seed of the random prompts, the mix sampling and the Poisson arrivals")
	fs.StringVar(&c.profile, "profile", "", "profile to request (default: the server's)")
	fs.DurationVar(&c.expected, "expected-itl", 0, "engine step time, for the added inter-token latency when the server does not export gptoss_step_duration_seconds")
	fs.StringVar(&c.out, "out", "", "write the results as JSON to this file")
	fs.StringVar(&c.out, "json", "", "same as --out")
	fs.StringVar(&c.apiKey, "api-key", os.Getenv("OPENAI_API_KEY"), "API key")
	fs.BoolVar(&c.stream, "stream", true, "stream the responses (false: plain requests; only end-to-end latency is measured, as in the original test plan's benchmark.sh)")
	fs.BoolVar(&c.usage, "usage", true, "when streaming, ask for stream_options.include_usage to read the actual prompt and output tokens")
	fs.BoolVar(&c.serverStats, "server-stats", true, "also read the server's inter-token latency from /stats after each level (its window holds the last 10000 gaps)")
	fs.StringVar(&c.endpoint, "endpoint", "chat", "chat (Harmony: header tokens produce no text, so some gaps span several tokens) or completions (every token is one event)")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Minute, "longest one request may take")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	c.requestsSet = set["requests"]
	c.params = map[string]string{}
	fs.VisitAll(func(f *flag.Flag) {
		v := f.Value.String()
		if f.Name == "api-key" && v != "" {
			v = "(set)" // a secret has no place in a results file
		}
		c.params[f.Name] = v
	})

	var err error
	if *rates != "" {
		if set["concurrency"] {
			return nil, errors.New("--rate and --concurrency are exclusive: one sweeps request rates, the other concurrent clients")
		}
		if c.rates, err = parseList(*rates, "rate", func(s string) (float64, error) {
			v, err := strconv.ParseFloat(s, 64)
			if err == nil && !(v > 0 && v < 1e9) {
				err = errors.New("not a positive rate")
			}
			return v, err
		}); err != nil {
			return nil, err
		}
		if c.duration <= 0 && !c.requestsSet {
			return nil, errors.New("--rate needs --duration or --requests to know when a point ends")
		}
	} else if c.levels, err = parseList(*levels, "concurrency", func(s string) (int, error) {
		v, err := strconv.Atoi(s)
		if err == nil && v < 1 {
			err = errors.New("below 1")
		}
		return v, err
	}); err != nil {
		return nil, err
	}
	switch {
	case c.arrival != "poisson" && c.arrival != "uniform":
		return nil, fmt.Errorf("--arrival %q: want poisson or uniform", c.arrival)
	case c.endpoint != "chat" && c.endpoint != "completions":
		return nil, fmt.Errorf("--endpoint %q: want chat or completions", c.endpoint)
	case c.maxInflight < 1:
		return nil, errors.New("--max-inflight must be at least 1")
	case c.maxTokens < 1:
		return nil, errors.New("--max-tokens must be at least 1")
	case c.timeout <= 0:
		return nil, errors.New("--timeout must be positive")
	case c.duration < 0:
		return nil, errors.New("--duration must not be negative")
	case c.requestsSet && c.perClient < 1:
		return nil, errors.New("--requests must be at least 1")
	}
	return &c, nil
}

// parseList parses a comma-separated list of values.
func parseList[T any](s, name string, parse func(string) (T, error)) ([]T, error) {
	var out []T
	for f := range strings.SplitSeq(s, ",") {
		v, err := parse(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("bad --%s %q: %w", name, f, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// run is the whole command, apart from the process exit: it returns the
// exit status (2 for a bad command line, 1 when a request failed or the
// results could not be written) and the error to print.
func run(args []string, stdout, stderr io.Writer) (int, error) {
	c, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0, nil
	}
	if err != nil {
		return 2, err
	}
	wl, err := newWorkload(c.seed, c.inputLen, c.inputLenRange, c.mix)
	if err != nil {
		return 2, err
	}
	tr := &http.Transport{MaxIdleConns: 4096, MaxIdleConnsPerHost: 4096, MaxConnsPerHost: 0}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	tg := target{url: strings.TrimRight(c.url, "/"), endpoint: c.endpoint, model: c.model, profile: c.profile, key: c.apiKey,
		stream: c.stream, usage: c.usage, maxTokens: c.maxTokens, timeout: c.timeout}

	mode, points := "concurrency", len(c.levels)
	if c.rates != nil {
		mode, points = "rate", len(c.rates)
	}
	var all []Level
	for p := range points {
		sum0, n0, stepErr := fetchStepStats(client, tg.url)
		var lv Level
		if mode == "rate" {
			spec := rateSpec{rate: c.rates[p], poisson: c.arrival == "poisson", duration: c.duration, maxInflight: c.maxInflight}
			if c.requestsSet {
				spec.requests = c.perClient
			}
			results, dur, rr := runRate(client, tg, wl, p, spec, c.seed)
			lv = summarize(results, dur, c.expected)
			sent := rr.arrivals - rr.notSent
			lv.Rate = &RateStats{OfferedPerS: spec.rate, Arrival: c.arrival, WindowS: rr.window.Seconds(),
				Arrivals: rr.arrivals, Sent: sent, NotSent: rr.notSent, MaxInflight: spec.maxInflight, PeakInflight: rr.peak}
			if rr.window > 0 {
				lv.Rate.AchievedPerS = float64(sent) / rr.window.Seconds()
			}
		} else {
			per := c.perClient
			var deadline time.Time
			if c.duration > 0 {
				deadline = time.Now().Add(c.duration)
				if !c.requestsSet {
					per = 0 // until the deadline
				}
			}
			results, dur := runConcurrency(client, tg, wl, p, c.levels[p], per, deadline)
			lv = summarize(results, dur, c.expected)
			lv.Concurrency = c.levels[p]
		}
		base := c.expected
		if sum1, n1, err := fetchStepStats(client, tg.url); stepErr == nil && err == nil && n1 > n0 {
			lv.EngineStepMs = (sum1 - sum0) / (n1 - n0) * 1e3
			base = time.Duration(lv.EngineStepMs * float64(time.Millisecond))
			lv.AddedITLms = nil
			if len(lv.itl) > 0 {
				p := addedPcts(lv.itl, base)
				lv.AddedITLms = &p
			}
		}
		if c.serverStats {
			if p, delay, err := fetchServerStats(client, tg.url); err != nil {
				fmt.Fprintln(stderr, "bench:", err)
			} else {
				lv.ServerITLms, lv.StreamDelayms = &p, &delay
				if base > 0 {
					e := ms(base)
					lv.ServerAddedITLms = &Pcts{P50: p.P50 - e, P95: p.P95 - e, P99: p.P99 - e}
				}
			}
		}
		printLevel(stdout, &lv)
		all = append(all, lv)
	}
	printSummary(stdout, all)

	if c.out != "" {
		doc := map[string]any{"date": time.Now().UTC().Format(time.RFC3339), "mode": mode, "url": c.url,
			"endpoint": c.endpoint, "model": c.model, "max_tokens": c.maxTokens, "expected_itl_ms": ms(c.expected),
			"params": c.params, "machine": machine(), "levels": all}
		if mode == "concurrency" && (c.duration == 0 || c.requestsSet) {
			doc["requests_per_client"] = c.perClient
		}
		b, err := json.MarshalIndent(doc, "", "  ")
		if err != nil {
			return 1, fmt.Errorf("encoding the results: %w", err)
		}
		if err := os.WriteFile(c.out, append(b, '\n'), 0o644); err != nil {
			return 1, fmt.Errorf("writing the results: %w", err)
		}
	}
	for _, lv := range all {
		if lv.Errors > 0 {
			return 1, nil
		}
	}
	return 0, nil
}

// fetchStepStats reads the engine step histogram's sum (seconds) and count
// from /metrics.
func fetchStepStats(client *http.Client, url string) (sum, count float64, err error) {
	resp, err := client.Get(url + "/metrics")
	if err != nil {
		return 0, 0, fmt.Errorf("/metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("/metrics: HTTP %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	found := 0
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		switch name {
		case "gptoss_step_duration_seconds_sum":
			sum, err = strconv.ParseFloat(val, 64)
			found++
		case "gptoss_step_duration_seconds_count":
			count, err = strconv.ParseFloat(val, 64)
			found++
		}
		if err != nil {
			return 0, 0, fmt.Errorf("/metrics: %s: %w", name, err)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, fmt.Errorf("/metrics: %w", err)
	}
	if found != 2 {
		return 0, 0, errors.New("no gptoss_step_duration_seconds in /metrics")
	}
	return sum, count, nil
}

// fetchServerStats reads the server's inter-token latency and stream delay
// percentiles from /stats.
func fetchServerStats(client *http.Client, url string) (itl, delay Pcts, err error) {
	resp, err := client.Get(url + "/stats")
	if err != nil {
		return Pcts{}, Pcts{}, fmt.Errorf("/stats: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Pcts{}, Pcts{}, fmt.Errorf("/stats: HTTP %d (--server-stats=false skips it)", resp.StatusCode)
	}
	type q struct{ P50, P95, P99 float64 }
	var body struct {
		Stats struct {
			Total struct {
				ITL   q `json:"inter_token_latency_seconds"`
				Delay q `json:"stream_delay_seconds"`
			} `json:"total"`
		} `json:"stats"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return Pcts{}, Pcts{}, fmt.Errorf("/stats: %w", err)
	}
	toMs := func(v q) Pcts { return Pcts{P50: v.P50 * 1e3, P95: v.P95 * 1e3, P99: v.P99 * 1e3} }
	return toMs(body.Stats.Total.ITL), toMs(body.Stats.Total.Delay), nil
}
