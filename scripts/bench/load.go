package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// target is where and how requests go.
type target struct {
	url, endpoint, model, profile, key string
	stream                             bool
	usage                              bool // ask for stream_options.include_usage
	maxTokens                          int
	timeout                            time.Duration
}

// result is what one request measured.
type result struct {
	ok bool
	// kind classifies a failure for the per-status error counts: the HTTP
	// status ("429", "503", ...), or "transport", "timeout",
	// "bad_response", "stream_error", "incomplete_stream".
	kind   string
	err    string
	ttft   time.Duration
	e2e    time.Duration
	itl    []time.Duration
	events int // text events (streaming)
	// usage is set when the server reported token counts; promptTokens and
	// completionTokens are then its numbers.
	usage            bool
	promptTokens     int
	completionTokens int
}

// outputTokens is the request's generated tokens: the server's count when
// it reported one, else the text events (one per token on
// /v1/completions; on chat, tokens that produce no text are missed).
func (r result) outputTokens() int {
	if r.usage {
		return r.completionTokens
	}
	return r.events
}

func fail(kind, format string, a ...any) result {
	return result{kind: kind, err: fmt.Sprintf(format, a...)}
}

// runConcurrency runs conc clients, each sending requests back to back:
// per of them, or (per <= 0) until the deadline.
func runConcurrency(client *http.Client, tg target, wl *workload, point, conc, per int, deadline time.Time) ([]result, time.Duration) {
	results := make([]result, 0, conc*max(per, 1))
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for w := range conc {
		wg.Go(func() {
			for i := 0; per <= 0 || i < per; i++ {
				if !deadline.IsZero() && !time.Now().Before(deadline) {
					return
				}
				rq := wl.request(stream(point, w, i), fmt.Sprintf("client %d request %d", w, i))
				r := one(client, tg, rq)
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return results, time.Since(start)
}

// rateSpec is a fixed-rate run: arrivals at rate per second, Poisson or
// evenly spaced, until requests arrivals or duration, whichever ends first
// (either may be 0: unbounded).
type rateSpec struct {
	rate        float64
	poisson     bool
	requests    int
	duration    time.Duration
	maxInflight int
}

// schedule yields arrival times (offsets from the start). Poisson arrivals
// have exponential gaps of mean 1/rate from a generator seeded by the run's
// seed; uniform arrivals are k/rate, computed by multiplication so that
// rounding does not accumulate.
type schedule struct {
	rng     *rand.Rand
	rate    float64
	poisson bool
	k       int
	t       float64 // seconds
}

func newSchedule(seed uint64, point int, rate float64, poisson bool) *schedule {
	// The second PCG word keeps the arrival stream apart from every prompt
	// stream (whose top bits hold the sweep point, far below 1<<63).
	return &schedule{rng: rand.New(rand.NewPCG(seed, 1<<63|uint64(point))), rate: rate, poisson: poisson}
}

func (s *schedule) next() time.Duration {
	s.k++
	if s.poisson {
		s.t += s.rng.ExpFloat64() / s.rate
	} else {
		s.t = float64(s.k) / s.rate
	}
	return time.Duration(s.t * float64(time.Second))
}

// rateRun is what a fixed-rate run did besides its results.
type rateRun struct {
	arrivals int
	notSent  int
	// window is the time the arrivals covered: until the last arrival, or
	// the whole --duration. Sent requests over it is the achieved rate.
	window time.Duration
	// peak is the most requests in flight at once.
	peak int
}

// runRate sends requests at the arrival times of the schedule without
// waiting for earlier ones (an open loop, unlike the concurrency mode), so
// a slow server faces a growing queue as real traffic would make it. At
// most maxInflight requests are out at once: an arrival that finds the cap
// reached is not sent but counted, so an overloaded server shows up as
// notSent rather than as an ever-growing number of client goroutines.
func runRate(client *http.Client, tg target, wl *workload, point int, spec rateSpec, seed uint64) ([]result, time.Duration, rateRun) {
	sched := newSchedule(seed, point, spec.rate, spec.poisson)
	sem := make(chan struct{}, spec.maxInflight)
	var (
		mu      sync.Mutex
		results []result
		wg      sync.WaitGroup
		run     rateRun
	)
	start := time.Now()
	for spec.requests <= 0 || run.arrivals < spec.requests {
		at := sched.next()
		if spec.duration > 0 && at > spec.duration {
			break
		}
		if d := time.Until(start.Add(at)); d > 0 {
			time.Sleep(d)
		}
		k := run.arrivals
		run.arrivals++
		select {
		case sem <- struct{}{}:
			run.peak = max(run.peak, len(sem))
			wg.Go(func() {
				r := one(client, tg, wl.request(stream(point, rateClient, k), fmt.Sprintf("request %d", k)))
				<-sem
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			})
		default:
			run.notSent++
		}
	}
	run.window = max(time.Since(start), spec.duration)
	wg.Wait()
	return results, time.Since(start), run
}

// one sends a request and times it; streamed, it times the text events.
func one(client *http.Client, tg target, rq request) result {
	maxTokens := tg.maxTokens
	if rq.maxTokens > 0 {
		maxTokens = rq.maxTokens
	}
	body := map[string]any{"model": tg.model, "max_tokens": maxTokens, "stream": tg.stream, "temperature": 0}
	path := "/v1/chat/completions"
	if tg.endpoint == "completions" {
		path = "/v1/completions"
		if rq.messages != nil {
			body["prompt"] = flatten(rq.messages)
		} else {
			body["prompt"] = rq.prompt
		}
	} else if rq.messages != nil {
		body["messages"] = rq.messages
	} else {
		body["messages"] = []message{{Role: "user", Content: rq.prompt}}
	}
	if tg.profile != "" {
		body["profile"] = tg.profile
	}
	if tg.stream && tg.usage {
		body["stream_options"] = map[string]bool{"include_usage": true}
	}
	b, err := json.Marshal(body)
	if err != nil {
		return fail("bad_request", "encoding the request: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), tg.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tg.url+path, bytes.NewReader(b))
	if err != nil {
		return fail("bad_request", "building the request: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if tg.key != "" {
		req.Header.Set("Authorization", "Bearer "+tg.key)
	}
	// transportErr classifies a failure to send or to read: a request that
	// ran past --timeout is told apart from a refused or broken connection.
	transportErr := func(err error) result {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fail("timeout", "no complete response within %v: %v", tg.timeout, err)
		}
		return fail("transport", "%v", err)
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return transportErr(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fail(strconv.Itoa(resp.StatusCode), "HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(msg))
	}
	if !tg.stream {
		var out struct {
			Usage *usage `json:"usage"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			if ctx.Err() != nil {
				return transportErr(err)
			}
			return fail("bad_response", "bad response: %v", err)
		}
		r := result{ok: true, e2e: time.Since(start)}
		r.setUsage(out.Usage)
		return r
	}
	var r result
	var last time.Time
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	done := false
	for sc.Scan() {
		data, ok := bytes.CutPrefix(sc.Bytes(), []byte("data: "))
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
			Usage *usage `json:"usage"`
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(data, &ch); err != nil {
			return fail("bad_response", "bad chunk: %v", err)
		}
		if ch.Error != nil {
			return fail("stream_error", "stream error: %s", ch.Error.Message)
		}
		r.setUsage(ch.Usage)
		if len(ch.Choices) == 0 || !hasText(ch.Choices[0].Delta, ch.Choices[0].Text) {
			continue
		}
		if r.events == 0 {
			r.ttft = now.Sub(start)
		} else {
			r.itl = append(r.itl, now.Sub(last))
		}
		last = now
		r.events++
	}
	if err := sc.Err(); err != nil {
		return transportErr(err)
	}
	if !done {
		return fail("incomplete_stream", "stream ended without [DONE]")
	}
	r.ok = true
	r.e2e = time.Since(start)
	return r
}

// usage is the token counts a server reports.
type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

func (r *result) setUsage(u *usage) {
	if u == nil {
		return
	}
	r.usage = true
	r.promptTokens, r.completionTokens = u.PromptTokens, u.CompletionTokens
}

// delta is the part of a chat chunk the bench reads.
type delta struct {
	Content          string `json:"content"`
	ReasoningContent string `json:"reasoning_content"`
	Reasoning        string `json:"reasoning"`
}

// hasText reports whether a chunk carries generated text (a chat delta's
// content or reasoning, or a completion's text).
func hasText(d delta, text string) bool {
	return text != "" || d.Content != "" || d.ReasoningContent != "" || d.Reasoning != ""
}
