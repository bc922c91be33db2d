// Command bench drives a running coordinator with concurrent streaming chat
// requests and reports what clients see: time to first token, inter-token
// latency (the gap between consecutive content events as received),
// end-to-end latency, throughput and errors, per concurrency level.
//
//	bench --url http://127.0.0.1:8000 --concurrency 1,64,512 --requests 4 --max-tokens 64
//
// With --expected-itl set to the mock engine's step time, it also reports
// the latency the serving path adds on top of the engine: ITL minus the
// step time. Results print as a table and, with --out, as JSON.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

type result struct {
	ok     bool
	err    string
	ttft   time.Duration
	e2e    time.Duration
	itl    []time.Duration
	tokens int
}

// Level is the summary of one concurrency level.
type Level struct {
	Concurrency   int     `json:"concurrency"`
	Requests      int     `json:"requests"`
	Errors        int     `json:"errors"`
	ErrorRate     float64 `json:"error_rate"`
	DurationS     float64 `json:"duration_s"`
	RequestsPerS  float64 `json:"requests_per_s"`
	OutputTokPerS float64 `json:"output_tokens_per_s"`
	TTFTms        Pcts    `json:"ttft_ms"`
	ITLms         Pcts    `json:"itl_ms"`
	E2Ems         Pcts    `json:"e2e_ms"`
	AddedITLms    *Pcts   `json:"added_itl_ms,omitempty"`
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
	EngineStepMs   float64 `json:"engine_step_ms,omitempty"`
	ITLSamples     int     `json:"itl_samples"`
	FirstErrorText string  `json:"first_error,omitempty"`

	itl []time.Duration // client-side gaps, for recomputing added latency
}

// Pcts are percentiles in milliseconds.
type Pcts struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func main() {
	url := flag.String("url", "http://127.0.0.1:8000", "coordinator base URL")
	model := flag.String("model", "gpt-oss-20b", "model id")
	levels := flag.String("concurrency", "1,64,512", "comma-separated concurrency levels")
	perClient := flag.Int("requests", 4, "requests per concurrent client at each level")
	maxTokens := flag.Int("max-tokens", 64, "max_tokens per request")
	profile := flag.String("profile", "", "profile to request (default: the server's)")
	expected := flag.Duration("expected-itl", 0, "engine step time, for the added inter-token latency when the server does not export gptoss_step_duration_seconds")
	out := flag.String("out", "", "write the results as JSON to this file")
	apiKey := flag.String("api-key", os.Getenv("OPENAI_API_KEY"), "API key")
	stream := flag.Bool("stream", true, "stream the responses (false: plain requests; only end-to-end latency is measured, as in the original test plan's benchmark.sh)")
	serverStats := flag.Bool("server-stats", true, "also read the server's inter-token latency from /stats after each level (its window holds the last 10000 gaps)")
	endpoint := flag.String("endpoint", "chat", "chat (Harmony: header tokens produce no text, so some gaps span several tokens) or completions (every token is one event)")
	flag.Parse()

	client := &http.Client{Transport: &http.Transport{MaxIdleConns: 4096, MaxIdleConnsPerHost: 4096, MaxConnsPerHost: 0}}
	var all []Level
	fmt.Printf("%-6s %6s %5s %8s %9s | %-23s | %-31s | %-17s", "conc", "reqs", "errs", "req/s", "tok/s",
		"TTFT ms p50/p95/p99", "ITL ms p50/p95/p99/max", "E2E ms p50/p99")
	fmt.Printf(" | step ms | added ITL p50/p99 client | server | stream delay p50/p99\n")
	for _, f := range strings.Split(*levels, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || c < 1 {
			fmt.Fprintf(os.Stderr, "bench: bad concurrency %q\n", f)
			os.Exit(2)
		}
		sum0, n0, stepErr := fetchStepStats(client, *url)
		lv := runLevel(client, target{*url, *endpoint, *model, *profile, *apiKey, *stream}, c, *perClient, *maxTokens, *expected)
		base := *expected
		if sum1, n1, err := fetchStepStats(client, *url); stepErr == nil && err == nil && n1 > n0 {
			lv.EngineStepMs = (sum1 - sum0) / (n1 - n0) * 1e3
			base = time.Duration(lv.EngineStepMs * float64(time.Millisecond))
			lv.AddedITLms = nil
			if len(lv.itl) > 0 {
				p := addedPcts(lv.itl, base)
				lv.AddedITLms = &p
			}
		}
		if *serverStats {
			if p, delay, err := fetchServerStats(client, *url); err != nil {
				fmt.Fprintln(os.Stderr, "bench: /stats:", err)
			} else {
				lv.ServerITLms, lv.StreamDelayms = &p, &delay
				if base > 0 {
					e := ms(base)
					lv.ServerAddedITLms = &Pcts{P50: p.P50 - e, P95: p.P95 - e, P99: p.P99 - e}
				}
			}
		}
		all = append(all, lv)
		fmt.Printf("%-6d %6d %5d %8.2f %9.1f | %6.1f %7.1f %7.1f | %6.2f %6.2f %6.2f %8.2f | %7.1f %8.1f",
			lv.Concurrency, lv.Requests, lv.Errors, lv.RequestsPerS, lv.OutputTokPerS,
			lv.TTFTms.P50, lv.TTFTms.P95, lv.TTFTms.P99, lv.ITLms.P50, lv.ITLms.P95, lv.ITLms.P99, lv.ITLms.Max,
			lv.E2Ems.P50, lv.E2Ems.P99)
		fmt.Printf(" | %7.3f", lv.EngineStepMs)
		if lv.AddedITLms != nil {
			fmt.Printf(" | %6.3f %6.3f", lv.AddedITLms.P50, lv.AddedITLms.P99)
		} else {
			fmt.Printf(" |    -      -  ")
		}
		if lv.ServerAddedITLms != nil {
			fmt.Printf(" | %6.3f %6.3f", lv.ServerAddedITLms.P50, lv.ServerAddedITLms.P99)
		}
		if lv.StreamDelayms != nil {
			fmt.Printf(" | %6.3f %6.3f", lv.StreamDelayms.P50, lv.StreamDelayms.P99)
		}
		fmt.Println()
		if lv.FirstErrorText != "" {
			fmt.Printf("       first error: %s\n", lv.FirstErrorText)
		}
		fmt.Printf("       success %d/%d in %.2f s, QPS %.2f\n", lv.Requests-lv.Errors, lv.Requests, lv.DurationS, lv.RequestsPerS)
	}
	if *out != "" {
		b, _ := json.MarshalIndent(map[string]any{"url": *url, "endpoint": *endpoint, "model": *model, "max_tokens": *maxTokens,
			"requests_per_client": *perClient, "expected_itl_ms": ms(*expected), "levels": all,
			"date": time.Now().UTC().Format(time.RFC3339)}, "", "  ")
		if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
	for _, lv := range all {
		if lv.Errors > 0 {
			os.Exit(1)
		}
	}
}

// target is where and how requests go.
type target struct {
	url, endpoint, model, profile, key string
	stream                             bool
}

func runLevel(client *http.Client, tg target, conc, per, maxTokens int, expected time.Duration) Level {
	results := make([]result, 0, conc*per)
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				r := one(client, tg, maxTokens, fmt.Sprintf("client %d request %d: tell me something", w, i))
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	dur := time.Since(start)
	lv := Level{Concurrency: conc, Requests: len(results), DurationS: dur.Seconds()}
	var ttft, e2e, itl []time.Duration
	tokens := 0
	for _, r := range results {
		if !r.ok {
			lv.Errors++
			if lv.FirstErrorText == "" {
				lv.FirstErrorText = r.err
			}
			continue
		}
		ttft = append(ttft, r.ttft)
		e2e = append(e2e, r.e2e)
		itl = append(itl, r.itl...)
		tokens += r.tokens
	}
	lv.ErrorRate = float64(lv.Errors) / float64(max(1, len(results)))
	lv.RequestsPerS = float64(len(results)-lv.Errors) / dur.Seconds()
	lv.OutputTokPerS = float64(tokens) / dur.Seconds()
	lv.TTFTms, lv.ITLms, lv.E2Ems = pcts(ttft), pcts(itl), pcts(e2e)
	lv.ITLSamples = len(itl)
	lv.itl = itl
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

// fetchStepStats reads the engine step histogram's sum (seconds) and count
// from /metrics.
func fetchStepStats(client *http.Client, url string) (sum, count float64, err error) {
	resp, err := client.Get(url + "/metrics")
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
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
			return 0, 0, err
		}
	}
	if found != 2 {
		return 0, 0, errors.New("no gptoss_step_duration_seconds in /metrics")
	}
	return sum, count, sc.Err()
}

// one sends a streaming request and times the text events.
func one(client *http.Client, tg target, maxTokens int, prompt string) result {
	body := map[string]any{"model": tg.model, "max_tokens": maxTokens, "stream": tg.stream, "temperature": 0}
	path := "/v1/chat/completions"
	if tg.endpoint == "completions" {
		path = "/v1/completions"
		body["prompt"] = prompt
	} else {
		body["messages"] = []map[string]string{{"role": "user", "content": prompt}}
	}
	if tg.profile != "" {
		body["profile"] = tg.profile
	}
	b, _ := json.Marshal(body)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, tg.url+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if tg.key != "" {
		req.Header.Set("Authorization", "Bearer "+tg.key)
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return result{err: err.Error()}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return result{err: fmt.Sprintf("HTTP %d: %s", resp.StatusCode, msg)}
	}
	if !tg.stream {
		var out struct {
			Usage struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return result{err: "bad response: " + err.Error()}
		}
		return result{ok: true, e2e: time.Since(start), tokens: out.Usage.CompletionTokens}
	}
	var r result
	var last time.Time
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	done := false
	for sc.Scan() {
		line := sc.Bytes()
		data, ok := bytes.CutPrefix(line, []byte("data: "))
		if !ok {
			continue
		}
		now := time.Now()
		if string(data) == "[DONE]" {
			done = true
			break
		}
		var ch struct {
			Choices []struct {
				Delta delta  `json:"delta"`
				Text  string `json:"text"`
			} `json:"choices"`
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(data, &ch); err != nil {
			return result{err: "bad chunk: " + err.Error()}
		}
		if ch.Error != nil {
			return result{err: "stream error: " + ch.Error.Message}
		}
		if len(ch.Choices) == 0 {
			continue
		}
		if !hasText(ch.Choices[0].Delta, ch.Choices[0].Text) {
			continue
		}
		if r.tokens == 0 {
			r.ttft = now.Sub(start)
		} else {
			r.itl = append(r.itl, now.Sub(last))
		}
		last = now
		r.tokens++
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		return result{err: err.Error()}
	}
	if !done {
		return result{err: "stream ended without [DONE]"}
	}
	r.ok = true
	r.e2e = time.Since(start)
	return r
}

// fetchServerStats reads the server's inter-token latency and stream delay
// percentiles from /stats.
func fetchServerStats(client *http.Client, url string) (itl, delay Pcts, err error) {
	resp, err := client.Get(url + "/stats")
	if err != nil {
		return Pcts{}, Pcts{}, err
	}
	defer resp.Body.Close()
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
		return Pcts{}, Pcts{}, err
	}
	toMs := func(v q) Pcts { return Pcts{P50: v.P50 * 1e3, P95: v.P95 * 1e3, P99: v.P99 * 1e3} }
	return toMs(body.Stats.Total.ITL), toMs(body.Stats.Total.Delay), nil
}

// delta is the part of a chat chunk the bench reads.
type delta struct {
	Content          string `json:"content"`
	ReasoningContent string `json:"reasoning_content"`
}

// hasText reports whether a chunk carries generated text (a chat delta's
// content or reasoning, or a completion's text).
func hasText(d delta, text string) bool {
	return text != "" || d.Content != "" || d.ReasoningContent != ""
}

func pcts(ds []time.Duration) Pcts {
	if len(ds) == 0 {
		return Pcts{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) float64 {
		i := int(q*float64(len(s))+0.5) - 1
		return ms(s[min(max(i, 0), len(s)-1)])
	}
	return Pcts{P50: at(0.50), P90: at(0.90), P95: at(0.95), P99: at(0.99), Max: ms(s[len(s)-1])}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
