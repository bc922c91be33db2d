package stats

import (
	"encoding/json"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

var profiles = []string{"latency_first", "balanced", "quality_first"}

// fakeClock is a manually advanced clock, safe for concurrent reads.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestRecorder(t testing.TB, opts ...Option) (*Recorder, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	r, err := New(profiles, reg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return r, reg
}

func ok(profile string, e2e time.Duration) Record {
	return Record{
		Profile: profile, Endpoint: "chat", Status: 200, FinishReason: "stop",
		PromptTokens: 10, CompletionTokens: 5,
		Queue: time.Millisecond, TTFT: e2e / 2, E2E: e2e,
	}
}

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func approx(t *testing.T, name string, got, want, tol float64) {
	t.Helper()
	if math.Abs(got-want) > tol {
		t.Errorf("%s = %v, want %v (±%v)", name, got, want, tol)
	}
}

func TestQuantilesKnownInputs(t *testing.T) {
	r, _ := newTestRecorder(t)
	itl := make([]time.Duration, 100)
	for i := range 100 {
		itl[i] = ms(i + 1)
	}
	// Insert in a scrambled order: the window must not depend on order.
	for i := range 100 {
		v := (i*37)%100 + 1
		rec := ok("balanced", ms(v))
		rec.TTFT = ms(v)
		rec.Queue = ms(v)
		r.Observe(rec)
	}
	r.Observe(Record{Profile: "balanced", Endpoint: "chat", Status: 200, FinishReason: "stop", ITL: itl})

	s := r.Snapshot(nil).Profiles["balanced"]
	const oneSample = 0.001
	// E2E: 100 samples of 1..100 ms plus one of 0 from the ITL-only record.
	approx(t, "latency p50", s.Latency.P50, 0.050, oneSample)
	approx(t, "latency p95", s.Latency.P95, 0.095, oneSample)
	approx(t, "latency p99", s.Latency.P99, 0.099, oneSample)
	approx(t, "latency mean", s.Latency.Mean, 5.050/101, 1e-9)
	// TTFT: the ITL-only record has TTFT 0, so it adds no sample.
	approx(t, "ttft p50", s.TTFT.P50, 0.050, 1e-9)
	approx(t, "ttft p95", s.TTFT.P95, 0.095, 1e-9)
	approx(t, "ttft p99", s.TTFT.P99, 0.099, 1e-9)
	approx(t, "itl p50", s.InterTokenLatency.P50, 0.050, 1e-9)
	approx(t, "itl p95", s.InterTokenLatency.P95, 0.095, 1e-9)
	approx(t, "itl p99", s.InterTokenLatency.P99, 0.099, 1e-9)
	approx(t, "queue p50", s.Queue.P50, 0.050, oneSample)
	approx(t, "queue p95", s.Queue.P95, 0.095, oneSample)
}

func TestQuantileEdgeCases(t *testing.T) {
	if got := quantile(nil, 0.5); got != 0 {
		t.Errorf("empty quantile = %v, want 0", got)
	}
	one := []time.Duration{ms(7)}
	for _, q := range []float64{0, 0.5, 0.99, 1} {
		if got := quantile(one, q); got != 0.007 {
			t.Errorf("quantile(one, %v) = %v, want 0.007", q, got)
		}
	}
}

func TestWindowEviction(t *testing.T) {
	r, _ := newTestRecorder(t, WithWindow(10))
	for range 10 {
		r.Observe(ok("balanced", 10*time.Second))
	}
	s := r.Snapshot(nil).Profiles["balanced"]
	approx(t, "p99 before", s.Latency.P99, 10, 1e-9)

	for range 10 {
		r.Observe(ok("balanced", ms(100)))
	}
	s = r.Snapshot(nil).Profiles["balanced"]
	approx(t, "p99 after", s.Latency.P99, 0.1, 1e-9)
	approx(t, "mean after", s.Latency.Mean, 0.1, 1e-9)
	if s.RequestsTotal != 20 {
		t.Errorf("requests_total = %d, want 20 (counters are not windowed)", s.RequestsTotal)
	}

	// ITL slices longer than the window keep only their tail, and partial
	// overwrites wrap around correctly.
	itl := make([]time.Duration, 25)
	for i := range itl {
		itl[i] = ms(i + 1)
	}
	r.Observe(Record{Profile: "quality_first", Status: 200, FinishReason: "stop", ITL: itl})
	q := r.Snapshot(nil).Profiles["quality_first"]
	approx(t, "itl p50 (16..25)", q.InterTokenLatency.P50, 0.020, 1e-9)
	r.Observe(Record{Profile: "quality_first", Status: 200, FinishReason: "stop", ITL: itl[:3]})
	q = r.Snapshot(nil).Profiles["quality_first"]
	// Window now holds 1,2,3 and 19..25: the 5th smallest is 20.
	approx(t, "itl p50 after wrap", q.InterTokenLatency.P50, 0.020, 1e-9)
	approx(t, "itl p50 nearest rank", quantile([]time.Duration{ms(1), ms(2)}, 0.5), 0.001, 1e-9)
	approx(t, "itl p99 after wrap", q.InterTokenLatency.P99, 0.025, 1e-9)
}

func TestWindowAddAllMatchesAdd(t *testing.T) {
	a, b := window{size: 7}, window{size: 7}
	v := time.Duration(0)
	for _, n := range []int{3, 0, 5, 1, 9, 7, 2, 13} {
		batch := make([]time.Duration, n)
		for i := range batch {
			v++
			batch[i] = v
			a.add(v)
		}
		b.addAll(batch)
		x, y := sortedCopy(a.buf), sortedCopy(b.buf)
		if !slices.Equal(x, y) {
			t.Fatalf("after batch of %d: add %v, addAll %v", n, x, y)
		}
	}
}

func sortedCopy(d []time.Duration) []time.Duration {
	c := slices.Clone(d)
	slices.Sort(c)
	return c
}

func TestLastMinuteRates(t *testing.T) {
	clk := newFakeClock()
	r, _ := newTestRecorder(t, WithClock(clk.Now))

	// Uptime below 60 s: divide by uptime, not 60.
	clk.Advance(10 * time.Second)
	for range 6 {
		r.Observe(ok("balanced", ms(100))) // 5 completion tokens each
	}
	clk.Advance(20 * time.Second)
	s := r.Snapshot(nil)
	approx(t, "uptime", s.UptimeSeconds, 30, 1e-9)
	approx(t, "qps_last_minute (uptime 30s)", s.Total.QPSLastMinute, 6.0/30, 1e-9)
	approx(t, "output tok/s (uptime 30s)", s.Total.OutputTokensPerSecond, 30.0/30, 1e-9)
	approx(t, "qps", s.Total.QPS, 6.0/30, 1e-9)

	// Two minutes later those requests are outside the window.
	clk.Advance(95 * time.Second) // t = 125 s
	for range 3 {
		r.Observe(ok("balanced", ms(100)))
	}
	r.ObserveRejected("balanced", "chat", 429, "rate_limit_exceeded")
	clk.Advance(5 * time.Second) // t = 130 s
	s = r.Snapshot(nil)
	approx(t, "qps_last_minute", s.Total.QPSLastMinute, 4.0/60, 1e-9)
	approx(t, "output tok/s", s.Total.OutputTokensPerSecond, 15.0/60, 1e-9)
	approx(t, "qps", s.Total.QPS, 10.0/130, 1e-9)
	b := s.Profiles["balanced"]
	approx(t, "profile qps_last_minute", b.QPSLastMinute, 4.0/60, 1e-9)
	if lf := s.Profiles["latency_first"]; lf.QPSLastMinute != 0 || lf.QPS != 0 {
		t.Errorf("idle profile rates = %v/%v, want 0", lf.QPSLastMinute, lf.QPS)
	}

	// Exactly 60 s after the last requests they have dropped out.
	clk.Advance(55 * time.Second) // t = 185 s, requests at 125 s
	s = r.Snapshot(nil)
	if s.Total.QPSLastMinute != 0 || s.Total.OutputTokensPerSecond != 0 {
		t.Errorf("after 60 s: qps_last_minute=%v tok/s=%v, want 0",
			s.Total.QPSLastMinute, s.Total.OutputTokensPerSecond)
	}
	if s.Total.PromptTokensTotal != 90 || s.Total.CompletionTokensTotal != 45 {
		t.Errorf("token totals = %d/%d, want 90/45",
			s.Total.PromptTokensTotal, s.Total.CompletionTokensTotal)
	}
}

func TestRateRingBucketReuse(t *testing.T) {
	var rr rateRing
	rr.add(100, 1, 10)
	rr.add(160, 2, 0) // same slot, one minute later: recycles it
	if reqs, toks := rr.sum(160); reqs != 2 || toks != 0 {
		t.Errorf("sum = %d/%d, want 2/0", reqs, toks)
	}
	rr.add(100, 5, 5) // late write into a recycled slot is dropped
	if reqs, _ := rr.sum(160); reqs != 2 {
		t.Errorf("late write counted: reqs = %d, want 2", reqs)
	}
	if reqs, _ := rr.sum(219); reqs != 2 {
		t.Errorf("sum(219) = %d, want 2 (window is (now-60, now])", reqs)
	}
	if reqs, _ := rr.sum(220); reqs != 0 {
		t.Errorf("sum(220) = %d, want 0", reqs)
	}
}

func TestErrorRateAndClassification(t *testing.T) {
	r, _ := newTestRecorder(t)
	for range 6 {
		r.Observe(ok("balanced", ms(10)))
	}
	// A stream that started (200) but ended in an error event is a server error.
	streamErr := ok("balanced", ms(10))
	streamErr.Stream = true
	streamErr.FinishReason = "error"
	r.Observe(streamErr)
	r.Observe(Record{Profile: "balanced", Endpoint: "completions", Status: 500, FinishReason: "error"})
	r.ObserveRejected("balanced", "completions", 400, "invalid_request_error")
	r.ObserveRejected("balanced", "chat", 503, "overloaded")

	s := r.Snapshot(nil).Profiles["balanced"]
	if s.RequestsTotal != 10 || s.RequestsOK != 6 || s.RequestsClientError != 1 || s.RequestsServerError != 3 {
		t.Errorf("total/ok/4xx/5xx = %d/%d/%d/%d, want 10/6/1/3",
			s.RequestsTotal, s.RequestsOK, s.RequestsClientError, s.RequestsServerError)
	}
	approx(t, "error_rate", s.ErrorRate, 0.3, 1e-9)
	// Rejected requests add no latency samples.
	approx(t, "latency p50", s.Latency.P50, 0.010, 1e-9)

	empty := r.Snapshot(nil).Profiles["quality_first"]
	if empty.ErrorRate != 0 {
		t.Errorf("error_rate with no requests = %v, want 0", empty.ErrorRate)
	}
}

func TestProfileSeparationAndTotal(t *testing.T) {
	r, _ := newTestRecorder(t)
	for range 3 {
		r.Observe(ok("latency_first", ms(10)))
	}
	for range 2 {
		r.Observe(ok("quality_first", ms(1000)))
	}
	r.ObserveCancel("quality_first")
	r.ObserveRejected("balanced", "chat", 429, "rate_limit_exceeded")

	load := map[string]Load{
		"latency_first": {Active: 2, Queued: 1},
		"quality_first": {Active: 1, Queued: 4},
	}
	s := r.Snapshot(load)
	lf, qf, bal := s.Profiles["latency_first"], s.Profiles["quality_first"], s.Profiles["balanced"]
	if lf.RequestsTotal != 3 || qf.RequestsTotal != 2 || bal.RequestsTotal != 1 || s.Total.RequestsTotal != 6 {
		t.Errorf("requests lf/qf/bal/total = %d/%d/%d/%d, want 3/2/1/6",
			lf.RequestsTotal, qf.RequestsTotal, bal.RequestsTotal, s.Total.RequestsTotal)
	}
	approx(t, "lf p99", lf.Latency.P99, 0.010, 1e-9)
	approx(t, "qf p50", qf.Latency.P50, 1.0, 1e-9)
	approx(t, "total p50", s.Total.Latency.P50, 0.010, 1e-9)
	approx(t, "total p99", s.Total.Latency.P99, 1.0, 1e-9)
	if qf.CancelledTotal != 1 || lf.CancelledTotal != 0 || s.Total.CancelledTotal != 1 {
		t.Errorf("cancelled qf/lf/total = %d/%d/%d, want 1/0/1",
			qf.CancelledTotal, lf.CancelledTotal, s.Total.CancelledTotal)
	}
	if s.Total.PromptTokensTotal != 50 || lf.PromptTokensTotal != 30 {
		t.Errorf("prompt tokens total/lf = %d/%d, want 50/30",
			s.Total.PromptTokensTotal, lf.PromptTokensTotal)
	}
	if lf.Active != 2 || lf.Queued != 1 || qf.Active != 1 || qf.Queued != 4 || bal.Active != 0 {
		t.Errorf("load not applied: lf=%d/%d qf=%d/%d bal=%d",
			lf.Active, lf.Queued, qf.Active, qf.Queued, bal.Active)
	}
	if s.Total.Active != 3 || s.Total.Queued != 5 {
		t.Errorf("total load = %d/%d, want 3/5", s.Total.Active, s.Total.Queued)
	}
}

func TestUnknownProfilesAreLazy(t *testing.T) {
	r, reg := newTestRecorder(t)
	r.Observe(ok("experimental", ms(5))) // not configured: must not panic
	r.ObserveRejected("", "chat", 401, "invalid_api_key")
	s := r.Snapshot(map[string]Load{"reloaded": {Active: 1}})
	if got := s.Profiles["experimental"].RequestsTotal; got != 1 {
		t.Errorf("experimental requests = %d, want 1", got)
	}
	if got := s.Profiles[UnknownProfile].RequestsClientError; got != 1 {
		t.Errorf("%s client errors = %d, want 1", UnknownProfile, got)
	}
	if got := s.Profiles["reloaded"].Active; got != 1 {
		t.Errorf("load-only profile active = %d, want 1", got)
	}
	if got := testutil.ToFloat64(r.m.requests.WithLabelValues("experimental", "chat", "200")); got != 1 {
		t.Errorf("requests_total{experimental} = %v, want 1", got)
	}
	if n, err := testutil.GatherAndCount(reg, "gptoss_e2e_request_latency_seconds"); err != nil || n != 5 {
		t.Errorf("e2e series = %d (%v), want 5 (3 configured + experimental + %s)", n, err, UnknownProfile)
	}

	// Names beyond the cap fold into OtherProfile instead of growing forever.
	for i := range 2 * maxProfiles {
		r.ObserveRejected("model-"+strings.Repeat("x", i), "chat", 404, "model_not_found")
	}
	s = r.Snapshot(nil)
	if len(s.Profiles) != maxProfiles {
		t.Errorf("profiles = %d, want cap %d", len(s.Profiles), maxProfiles)
	}
	if s.Profiles[OtherProfile].RequestsTotal == 0 {
		t.Errorf("%s section is empty", OtherProfile)
	}
	if s.Total.RequestsTotal != 2+2*maxProfiles {
		t.Errorf("total requests = %d, want %d", s.Total.RequestsTotal, 2+2*maxProfiles)
	}
}

func TestPrometheusMetrics(t *testing.T) {
	r, reg := newTestRecorder(t)
	itl := make([]time.Duration, 50)
	for i := range itl {
		itl[i] = ms(20)
	}
	for range 3 {
		rec := ok("balanced", 2*time.Second)
		rec.ITL = itl
		r.Observe(rec)
	}
	r.Observe(Record{Profile: "balanced", Endpoint: "completions", Status: 200,
		FinishReason: "length", PromptTokens: 7, CompletionTokens: 100, E2E: time.Second})
	r.Observe(Record{Profile: "latency_first", Endpoint: "chat", Status: 200,
		FinishReason: "cancelled", CompletionTokens: 1, TTFT: ms(30), E2E: ms(40)})
	r.ObserveCancel("latency_first")
	r.ObserveRejected("balanced", "chat", 429, "rate_limit_exceeded")
	r.ObserveRejected("balanced", "completions", 429, "rate_limit_exceeded")
	r.ObserveRejected("balanced", "completions", 400, "invalid_request_error")
	r.ObserveRejected("balanced", "", 404, "unknown_url")
	r.SetLoad(map[string]Load{"balanced": {Active: 3, Queued: 2}})

	counters := []struct {
		c    prometheus.Collector
		want float64
	}{
		{r.m.requests.WithLabelValues("balanced", "chat", "200"), 3},
		{r.m.requests.WithLabelValues("balanced", "completions", "200"), 1},
		// Refused requests count under their endpoint; only a URL that
		// is none counts as unknown.
		{r.m.requests.WithLabelValues("balanced", "chat", "429"), 1},
		{r.m.requests.WithLabelValues("balanced", "completions", "429"), 1},
		{r.m.requests.WithLabelValues("balanced", "completions", "400"), 1},
		{r.m.requests.WithLabelValues("balanced", unknownEndpoint, "404"), 1},
		{r.m.requests.WithLabelValues("latency_first", "chat", "200"), 1},
		{r.m.finished.WithLabelValues("balanced", "stop"), 3},
		{r.m.finished.WithLabelValues("balanced", "length"), 1},
		{r.m.finished.WithLabelValues("latency_first", "cancelled"), 1},
		{r.m.rejected.WithLabelValues("balanced", "rate_limit_exceeded"), 2},
		{r.m.promptTotal.WithLabelValues("balanced"), 37},
		{r.m.genTotal.WithLabelValues("balanced"), 115},
		{r.m.cancelled.WithLabelValues("latency_first"), 1},
		{r.m.cancelled.WithLabelValues("balanced"), 0},
		{r.m.running.WithLabelValues("balanced"), 3},
		{r.m.waiting.WithLabelValues("balanced"), 2},
		{r.m.running.WithLabelValues("quality_first"), 0},
	}
	for i, tc := range counters {
		if got := testutil.ToFloat64(tc.c); got != tc.want {
			t.Errorf("case %d: got %v, want %v", i, got, tc.want)
		}
	}

	// Every configured profile has its histogram series from the start.
	for _, name := range []string{
		"gptoss_time_to_first_token_seconds",
		"gptoss_inter_token_latency_seconds",
		"gptoss_e2e_request_latency_seconds",
		"gptoss_request_queue_time_seconds",
		"gptoss_request_prompt_tokens",
		"gptoss_request_generation_tokens",
		"gptoss_num_requests_running",
		"gptoss_num_requests_waiting",
		"gptoss_prompt_tokens_total",
		"gptoss_generation_tokens_total",
		"gptoss_requests_cancelled_total",
	} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n != len(profiles) {
			t.Errorf("%s: %d series (%v), want %d", name, n, err, len(profiles))
		}
	}
	if n := testutil.CollectAndCount(r.m.requests); n != 7 {
		t.Errorf("gptoss_requests_total series = %d, want 7", n)
	}

	// Histogram sample counts: 3 requests × 50 ITL gaps; TTFT only where > 0.
	checkHistCount(t, reg, "gptoss_inter_token_latency_seconds", "balanced", 150, 150*0.020)
	checkHistCount(t, reg, "gptoss_time_to_first_token_seconds", "balanced", 3, 3*1.0)
	checkHistCount(t, reg, "gptoss_time_to_first_token_seconds", "latency_first", 1, 0.030)
	checkHistCount(t, reg, "gptoss_e2e_request_latency_seconds", "balanced", 4, 7)
	checkHistCount(t, reg, "gptoss_request_generation_tokens", "balanced", 4, 115)
	checkHistCount(t, reg, "gptoss_request_queue_time_seconds", "quality_first", 0, 0)

	// The text exposition carries zero-valued series for idle profiles.
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP gptoss_num_requests_waiting Requests currently waiting for admission, as reported by the scheduler.
# TYPE gptoss_num_requests_waiting gauge
gptoss_num_requests_waiting{profile="balanced"} 2
gptoss_num_requests_waiting{profile="latency_first"} 0
gptoss_num_requests_waiting{profile="quality_first"} 0
`), "gptoss_num_requests_waiting"); err != nil {
		t.Error(err)
	}
}

// checkHistCount asserts the sample count and sum of one histogram series.
func checkHistCount(t *testing.T, reg *prometheus.Registry, name, profile string, count uint64, sum float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "profile" && lp.GetValue() == profile {
					h := m.GetHistogram()
					if h.GetSampleCount() != count {
						t.Errorf("%s{%s} count = %d, want %d", name, profile, h.GetSampleCount(), count)
					}
					if math.Abs(h.GetSampleSum()-sum) > 1e-9 {
						t.Errorf("%s{%s} sum = %v, want %v", name, profile, h.GetSampleSum(), sum)
					}
					return
				}
			}
		}
	}
	t.Errorf("%s{profile=%q} not found", name, profile)
}

func TestDoubleRegistrationFails(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(profiles, reg); err != nil {
		t.Fatalf("first New: %v", err)
	}
	if _, err := New(profiles, reg); err == nil {
		t.Fatal("second New on the same registry succeeded, want error")
	}
	if _, err := New(profiles, nil); err != nil {
		t.Fatalf("New with nil registerer: %v", err)
	}
}

func TestEmptySnapshotJSON(t *testing.T) {
	clk := newFakeClock()
	r, _ := newTestRecorder(t, WithClock(clk.Now)) // uptime exactly 0
	b, err := json.Marshal(r.Snapshot(nil))
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	js := string(b)
	for _, bad := range []string{"NaN", "Inf"} {
		if strings.Contains(js, bad) {
			t.Errorf("JSON contains %s: %s", bad, js)
		}
	}
	for _, key := range []string{
		`"uptime_seconds"`, `"total"`, `"profiles"`, `"requests_total"`, `"requests_ok"`,
		`"requests_client_error"`, `"requests_server_error"`, `"cancelled_total"`, `"qps"`,
		`"qps_last_minute"`, `"error_rate"`, `"latency_seconds"`, `"mean"`, `"ttft_seconds"`,
		`"inter_token_latency_seconds"`, `"queue_seconds"`, `"p50"`, `"p95"`, `"p99"`,
		`"prompt_tokens_total"`, `"completion_tokens_total"`, `"output_tokens_per_second"`,
		`"active"`, `"queued"`, `"balanced"`,
	} {
		if !strings.Contains(js, key) {
			t.Errorf("JSON lacks %s", key)
		}
	}
}

func TestConcurrentObserveAndSnapshot(t *testing.T) {
	r, _ := newTestRecorder(t, WithWindow(256))
	itl := make([]time.Duration, 20)
	for i := range itl {
		itl[i] = ms(i)
	}
	const writers, perWriter = 4, 300
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				rec := ok(profiles[(w+i)%len(profiles)], ms(i))
				rec.ITL = itl
				r.Observe(rec)
				if i%50 == 0 {
					r.ObserveCancel(profiles[w%len(profiles)])
					r.ObserveRejected("dynamic", "chat", 503, "overloaded")
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 50 {
			s := r.Snapshot(map[string]Load{"balanced": {Active: 1}})
			if _, err := json.Marshal(s); err != nil {
				t.Errorf("json.Marshal: %v", err)
				return
			}
			r.SetLoad(map[string]Load{"balanced": {Active: 1}})
		}
	}()
	wg.Wait()
	<-done
	s := r.Snapshot(nil)
	want := uint64(writers*perWriter + writers*perWriter/50)
	if s.Total.RequestsTotal != want {
		t.Errorf("total requests = %d, want %d", s.Total.RequestsTotal, want)
	}
	var sum uint64
	for _, p := range s.Profiles {
		sum += p.RequestsTotal
	}
	if sum != want {
		t.Errorf("sum over profiles = %d, want %d", sum, want)
	}
}

func BenchmarkObserve(b *testing.B) {
	r, _ := newTestRecorder(b)
	itl := make([]time.Duration, 50)
	for i := range itl {
		itl[i] = ms(20 + i%7)
	}
	rec := Record{
		Profile: "balanced", Endpoint: "chat", Status: 200, Stream: true, FinishReason: "stop",
		PromptTokens: 512, CompletionTokens: 50,
		Queue: ms(3), TTFT: ms(120), E2E: 1100 * time.Millisecond, ITL: itl,
	}
	b.ReportAllocs()
	for b.Loop() {
		r.Observe(rec)
	}
}

func BenchmarkObserveParallel(b *testing.B) {
	r, _ := newTestRecorder(b)
	itl := make([]time.Duration, 50)
	for i := range itl {
		itl[i] = ms(20 + i%7)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			r.Observe(Record{
				Profile: profiles[i%len(profiles)], Endpoint: "chat", Status: 200, FinishReason: "stop",
				PromptTokens: 512, CompletionTokens: 50,
				Queue: ms(3), TTFT: ms(120), E2E: 1100 * time.Millisecond, ITL: itl,
			})
		}
	})
}

func BenchmarkSnapshot(b *testing.B) {
	r, _ := newTestRecorder(b)
	itl := make([]time.Duration, 50)
	for i := range itl {
		itl[i] = ms(20 + i%7)
	}
	for i := range DefaultWindow {
		r.Observe(Record{Profile: profiles[i%len(profiles)], Status: 200, FinishReason: "stop",
			E2E: ms(i % 1000), TTFT: ms(i % 100), ITL: itl})
	}
	b.ReportAllocs()
	for b.Loop() {
		r.Snapshot(nil)
	}
}

func TestObserveStep(t *testing.T) {
	reg := prometheus.NewRegistry()
	r, err := New([]string{"p"}, reg)
	if err != nil {
		t.Fatal(err)
	}
	r.ObserveStep(3, 130, 20*time.Millisecond)
	r.ObserveStep(4, 4, 10*time.Millisecond)
	if n := testutil.CollectAndCount(r.m.stepDuration); n != 1 {
		t.Fatalf("step histogram series %d", n)
	}
	var m dto.Metric
	if err := r.m.stepTokens.Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Histogram.GetSampleCount() != 2 || m.Histogram.GetSampleSum() != 134 {
		t.Fatalf("tokens histogram %v", m.Histogram)
	}
}

func TestStreamDelayQuantiles(t *testing.T) {
	r, err := New([]string{"p"}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Microsecond)
	}
	r.Observe(Record{Profile: "p", Endpoint: "chat", Status: 200, Stream: true, FinishReason: "stop", StreamDelay: d})
	r.Observe(Record{Profile: "p", Endpoint: "chat", Status: 200, FinishReason: "stop"})
	sd := r.Snapshot(nil).Profiles["p"].StreamDelay
	if sd.P50 != 50e-6 || sd.P99 != 99e-6 {
		t.Fatalf("stream delay %+v", sd)
	}
	if n := testutil.CollectAndCount(r.m.streamDelay); n != 1 {
		t.Fatalf("series %d", n)
	}
}

// Parse warnings are counted in gptoss_harmony_malformed_total by kind;
// warnings without a kind are "unclassified", and the kind label is
// bounded.
func TestHarmonyMalformedCounter(t *testing.T) {
	r, err := New([]string{"p"}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	r.Observe(Record{Profile: "p", Endpoint: "chat", Status: 200, FinishReason: "stop", ParseWarnings: 3})
	r.Observe(Record{Profile: "p", Endpoint: "chat", Status: 200, FinishReason: "stop"})
	r.Observe(Record{Profile: "p", Endpoint: "chat", Status: 200, FinishReason: "stop", ParseWarnings: 4,
		Malformed: map[string]int{"no_channel": 1, "stray_token": 2}})
	r.Observe(Record{Profile: "p", Endpoint: "chat", Status: 200, FinishReason: "length",
		Malformed: map[string]int{"no_channel": 2, "Bad Label": 1, "zero": 0}})
	for kind, want := range map[string]float64{"unclassified": 4, "no_channel": 3, "stray_token": 2, "other": 1} {
		if got := testutil.ToFloat64(r.m.harmonyMalformed.WithLabelValues("p", kind)); got != want {
			t.Fatalf("%s: %v, want %v", kind, got, want)
		}
	}
	if n := testutil.CollectAndCount(r.m.harmonyMalformed); n != 4 {
		t.Fatalf("%d series, want 4", n)
	}
	// A client cannot grow the label set without bound: past the limit,
	// new kinds are "other".
	for i := range 2 * maxMalformedKinds {
		r.Observe(Record{Profile: "p", Endpoint: "chat", Status: 200, FinishReason: "stop",
			Malformed: map[string]int{"kind_" + string(rune('a'+i%26)) + string(rune('a'+i/26)): 1}})
	}
	if n := testutil.CollectAndCount(r.m.harmonyMalformed); n > maxMalformedKinds {
		t.Fatalf("%d series for %d kinds at most", n, maxMalformedKinds)
	}
}
