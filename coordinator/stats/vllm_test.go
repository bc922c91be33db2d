package stats

import (
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape serves reg as /metrics does (promhttp, text format) and parses
// the exposition back with Prometheus' own parser, with the legacy name
// rules a Prometheus server without UTF-8 names applies: the names are
// checked as a scraper reads them, not as the Go side holds them.
func scrape(t *testing.T, reg prometheus.Gatherer) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	ts := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	defer ts.Close()
	resp, err := http.Get(ts.URL)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("scrape: status %d, %v: %s", resp.StatusCode, err, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("scrape: content type %q, want the text format", ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parsing the exposition: %v\n%s", err, body)
	}
	return mfs, string(body)
}

// labelsOf is a series' labels as a map.
func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, lp := range m.GetLabel() {
		out[lp.GetName()] = lp.GetValue()
	}
	return out
}

// labelNames is a series' label names, sorted.
func labelNames(m *dto.Metric) []string {
	var out []string
	for _, lp := range m.GetLabel() {
		out = append(out, lp.GetName())
	}
	sort.Strings(out)
	return out
}

// series returns the one series of name whose labels include want.
func series(t *testing.T, mfs map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	t.Helper()
	mf := mfs[name]
	if mf == nil {
		t.Fatalf("%s not exposed", name)
	}
	var found *dto.Metric
	for _, m := range mf.GetMetric() {
		l := labelsOf(m)
		match := true
		for k, v := range want {
			if l[k] != v {
				match = false
			}
		}
		if match {
			if found != nil {
				t.Fatalf("%s%v: more than one series", name, want)
			}
			found = m
		}
	}
	if found == nil {
		t.Fatalf("%s%v: no such series", name, want)
	}
	return found
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	}
	return m.GetUntyped().GetValue()
}

func TestVLLMMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	r, err := New(profiles, reg, WithModel("gpt-oss-20b", 4096))
	if err != nil {
		t.Fatal(err)
	}
	kv := KV{BlockSize: 16, Blocks: 200, UsedBlocks: 50, PrefixLookups: 10, PrefixHits: 4}
	if err := reg.Register(NewKVCollector("gpt-oss-20b", func() (KV, bool) { return kv, true })); err != nil {
		t.Fatal(err)
	}

	itl := []time.Duration{ms(20), ms(30), ms(40)}
	stop := Record{Profile: "balanced", Endpoint: "chat", Status: 200, FinishReason: "stop", PromptTokens: 10, CompletionTokens: 4,
		Queue: ms(100), TTFT: ms(300), E2E: ms(900), ITL: itl}
	r.Observe(stop)
	r.Observe(stop)
	r.Observe(Record{Profile: "latency_first", Endpoint: "completions", Status: 200, FinishReason: "length", PromptTokens: 7, CompletionTokens: 16,
		TTFT: ms(50), E2E: ms(500)})
	r.Observe(Record{Profile: "balanced", Endpoint: "chat", Status: 200, FinishReason: "tool_calls", PromptTokens: 30, CompletionTokens: 9,
		TTFT: ms(50), E2E: ms(500)})
	r.Observe(Record{Profile: "balanced", Endpoint: "chat", Status: 499, FinishReason: "cancelled", PromptTokens: 5, CompletionTokens: 1,
		TTFT: ms(10), E2E: ms(20)})
	r.Observe(Record{Profile: "balanced", Endpoint: "chat", Status: 200, FinishReason: "error", PromptTokens: 5, E2E: ms(20)})
	r.ObserveRejected("balanced", "chat", 429, "rate_limit_exceeded") // no generation: in no vLLM series
	r.ObservePreemption("balanced")
	r.ObserveStep(3, 40, ms(12))
	r.SetLoad(map[string]Load{"balanced": {Active: 3, Queued: 2}, "latency_first": {Active: 1, Queued: 4}})

	mfs, text := scrape(t, reg)
	base := map[string]string{"model_name": "gpt-oss-20b", "engine": "0"}
	wantTypes := map[string]dto.MetricType{
		"vllm:num_requests_running":           dto.MetricType_GAUGE,
		"vllm:num_requests_waiting":           dto.MetricType_GAUGE,
		"vllm:kv_cache_usage_perc":            dto.MetricType_GAUGE,
		"vllm:prefix_cache_queries_total":     dto.MetricType_COUNTER,
		"vllm:prefix_cache_hits_total":        dto.MetricType_COUNTER,
		"vllm:prompt_tokens_total":            dto.MetricType_COUNTER,
		"vllm:generation_tokens_total":        dto.MetricType_COUNTER,
		"vllm:num_preemptions_total":          dto.MetricType_COUNTER,
		"vllm:request_success_total":          dto.MetricType_COUNTER,
		"vllm:time_to_first_token_seconds":    dto.MetricType_HISTOGRAM,
		"vllm:inter_token_latency_seconds":    dto.MetricType_HISTOGRAM,
		"vllm:e2e_request_latency_seconds":    dto.MetricType_HISTOGRAM,
		"vllm:request_queue_time_seconds":     dto.MetricType_HISTOGRAM,
		"vllm:request_inference_time_seconds": dto.MetricType_HISTOGRAM,
		"vllm:request_prefill_time_seconds":   dto.MetricType_HISTOGRAM,
		"vllm:request_decode_time_seconds":    dto.MetricType_HISTOGRAM,
		"vllm:request_prompt_tokens":          dto.MetricType_HISTOGRAM,
		"vllm:request_generation_tokens":      dto.MetricType_HISTOGRAM,
		"vllm:iteration_tokens_total":         dto.MetricType_HISTOGRAM,
	}
	for name, typ := range wantTypes {
		mf := mfs[name]
		if mf == nil {
			t.Errorf("%s not exposed", name)
			continue
		}
		if mf.GetType() != typ {
			t.Errorf("%s: type %v, want %v", name, mf.GetType(), typ)
		}
		want := []string{"engine", "model_name"}
		if name == "vllm:request_success_total" {
			want = []string{"engine", "finished_reason", "model_name"}
		}
		for _, m := range mf.GetMetric() {
			if got := labelNames(m); !slices.Equal(got, want) {
				t.Errorf("%s: labels %v, want %v", name, got, want)
			}
			if l := labelsOf(m); l["model_name"] != "gpt-oss-20b" || l["engine"] != "0" {
				t.Errorf("%s: labels %v", name, l)
			}
		}
	}
	// The counters' names as vLLM exposes them, in the text itself.
	for _, line := range []string{
		`vllm:prompt_tokens_total{engine="0",model_name="gpt-oss-20b"} 67`,
		`vllm:generation_tokens_total{engine="0",model_name="gpt-oss-20b"} 34`,
		`vllm:request_success_total{engine="0",finished_reason="stop",model_name="gpt-oss-20b"} 2`,
		"# TYPE vllm:request_success_total counter",
	} {
		if !strings.Contains(text, line+"\n") {
			t.Errorf("exposition lacks %q", line)
		}
	}

	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"vllm:num_requests_running", base, 4},
		{"vllm:num_requests_waiting", base, 6},
		{"vllm:kv_cache_usage_perc", base, 0.25},
		{"vllm:prefix_cache_queries_total", base, 160}, // 10 blocks of 16
		{"vllm:prefix_cache_hits_total", base, 64},
		{"vllm:prompt_tokens_total", base, 67},
		{"vllm:generation_tokens_total", base, 34},
		{"vllm:num_preemptions_total", base, 1},
		{"vllm:request_success_total", map[string]string{"finished_reason": "stop"}, 2},
		{"vllm:request_success_total", map[string]string{"finished_reason": "length"}, 1},
		{"vllm:request_success_total", map[string]string{"finished_reason": "tool_calls"}, 1},
		{"vllm:request_success_total", map[string]string{"finished_reason": "abort"}, 1}, // "cancelled"
		{"vllm:request_success_total", map[string]string{"finished_reason": "error"}, 1},
	}
	for _, c := range checks {
		if got := value(series(t, mfs, c.name, c.labels)); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if n := len(mfs["vllm:request_success_total"].GetMetric()); n != 6 {
		t.Errorf("vllm:request_success_total: %d series, want 6 (vLLM's five reasons and tool_calls)", n)
	}
	if got := value(series(t, mfs, "vllm:request_success_total", map[string]string{"finished_reason": "repetition"})); got != 0 {
		t.Errorf("repetition = %v, want a series at 0", got)
	}

	hist := func(name string) *dto.Histogram { return series(t, mfs, name, base).GetHistogram() }
	for _, h := range []struct {
		name  string
		count uint64
		sum   float64
	}{
		{"vllm:time_to_first_token_seconds", 5, 0.3 + 0.3 + 0.05 + 0.05 + 0.01},
		{"vllm:inter_token_latency_seconds", 6, 2 * 0.09},
		{"vllm:e2e_request_latency_seconds", 6, 0.9 + 0.9 + 0.5 + 0.5 + 0.02 + 0.02},
		{"vllm:request_queue_time_seconds", 6, 0.2},
		{"vllm:request_prefill_time_seconds", 5, 0.2 + 0.2 + 0.05 + 0.05 + 0.01},
		{"vllm:request_decode_time_seconds", 5, 0.6 + 0.6 + 0.45 + 0.45 + 0.01},
		{"vllm:request_inference_time_seconds", 6, 0.8 + 0.8 + 0.5 + 0.5 + 0.02 + 0.02},
		{"vllm:request_prompt_tokens", 6, 67},
		{"vllm:request_generation_tokens", 6, 34},
		{"vllm:iteration_tokens_total", 1, 40},
	} {
		got := hist(h.name)
		if got.GetSampleCount() != h.count {
			t.Errorf("%s: count %d, want %d", h.name, got.GetSampleCount(), h.count)
		}
		approx(t, h.name+" sum", got.GetSampleSum(), h.sum, 1e-9)
	}
	bounds := func(name string) []float64 {
		var out []float64
		for _, b := range hist(name).GetBucket() {
			if !math.IsInf(b.GetUpperBound(), 1) { // the parser adds +Inf
				out = append(out, b.GetUpperBound())
			}
		}
		return out
	}
	for name, want := range map[string][]float64{
		"vllm:time_to_first_token_seconds": vllmTTFTBuckets,
		"vllm:inter_token_latency_seconds": vllmITLBuckets,
		"vllm:e2e_request_latency_seconds": requestLatencyBuckets,
		"vllm:request_queue_time_seconds":  requestLatencyBuckets,
		"vllm:request_prompt_tokens":       {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000},
	} {
		if got := bounds(name); !slices.Equal(got, want) {
			t.Errorf("%s buckets %v, want %v", name, got, want)
		}
	}

	// The gptoss_* series are all still there.
	for _, name := range []string{"gptoss_time_to_first_token_seconds", "gptoss_prompt_tokens_total", "gptoss_generation_tokens_total",
		"gptoss_request_finished_total", "gptoss_num_requests_running", "gptoss_num_requests_waiting", "gptoss_step_duration_seconds",
		"gptoss_preemptions_total", "gptoss_requests_total"} {
		if mfs[name] == nil {
			t.Errorf("%s no longer exposed", name)
		}
	}
}

// vLLM's request latency buckets, checked apart because metrics.go's
// gptoss_* histograms share the slice.
func TestVLLMBuckets(t *testing.T) {
	want := []float64{0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680}
	if !slices.Equal(requestLatencyBuckets, want) {
		t.Errorf("requestLatencyBuckets = %v, want vLLM's %v", requestLatencyBuckets, want)
	}
	for top, want := range map[int][]float64{
		0:   nil,
		1:   {1},
		100: {1, 2, 5, 10, 20, 50, 100},
		499: {1, 2, 5, 10, 20, 50, 100, 200},
	} {
		if got := buckets125(top); !slices.Equal(got, want) {
			t.Errorf("buckets125(%d) = %v, want %v", top, got, want)
		}
	}
}

func TestVLLMDefaultModelAndFinishReasonBound(t *testing.T) {
	reg := prometheus.NewRegistry()
	r, err := New(profiles, reg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 * maxFinishReasons {
		r.Observe(Record{Profile: "balanced", Status: 200, FinishReason: "reason_" + strings.Repeat("x", i%26+1), E2E: ms(1)})
	}
	r.Observe(Record{Profile: "balanced", Status: 200, FinishReason: "Not A Label", E2E: ms(1)})
	mfs, _ := scrape(t, reg)
	got := mfs["vllm:request_success_total"].GetMetric()
	if len(got) != maxFinishReasons {
		t.Errorf("%d finished_reason values, want the cap %d", len(got), maxFinishReasons)
	}
	total := 0.0
	for _, m := range got {
		total += value(m)
		if l := labelsOf(m); l["model_name"] != DefaultModelName {
			t.Errorf("model_name %q, want %q", l["model_name"], DefaultModelName)
		}
	}
	if total != float64(3*maxFinishReasons+1) {
		t.Errorf("request_success_total sums to %v, want %d", total, 3*maxFinishReasons+1)
	}
	if value(series(t, mfs, "vllm:request_success_total", map[string]string{"finished_reason": otherKind})) < 1 {
		t.Error("no requests counted as other")
	}
}

func TestKVCollector(t *testing.T) {
	kv, ok := KV{}, false
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewKVCollector("m", func() (KV, bool) { return kv, ok }))
	get := func() (perc, queries, hits float64) {
		mfs, _ := scrape(t, reg)
		l := map[string]string{"model_name": "m", "engine": "0"}
		return value(series(t, mfs, "vllm:kv_cache_usage_perc", l)), value(series(t, mfs, "vllm:prefix_cache_queries_total", l)),
			value(series(t, mfs, "vllm:prefix_cache_hits_total", l))
	}
	// No engine yet: the series exist, at zero.
	if p, q, h := get(); p != 0 || q != 0 || h != 0 {
		t.Errorf("before any usage: %v %v %v", p, q, h)
	}
	kv, ok = KV{BlockSize: 4, Blocks: 10, UsedBlocks: 10, PrefixLookups: 5, PrefixHits: 2}, true
	if p, q, h := get(); p != 1 || q != 20 || h != 8 {
		t.Errorf("full cache: %v %v %v", p, q, h)
	}
	// The usage goes away for a while: the counters hold.
	ok = false
	if p, q, h := get(); p != 0 || q != 20 || h != 8 {
		t.Errorf("usage gone: %v %v %v", p, q, h)
	}
	// The scheduler rebuilt its pools and counts from zero: the counters
	// go on from where they were.
	kv, ok = KV{BlockSize: 4, Blocks: 10, UsedBlocks: 1, PrefixLookups: 1, PrefixHits: 1}, true
	if p, q, h := get(); p != 0.1 || q != 24 || h != 12 {
		t.Errorf("after the restart: %v %v %v", p, q, h)
	}
}

func TestWorkerCollector(t *testing.T) {
	var ws []Worker
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewWorkerCollector(func() []Worker { return ws }))
	if mfs, _ := scrape(t, reg); len(mfs) != 0 {
		t.Errorf("no workers, yet %d families", len(mfs))
	}
	ws = []Worker{
		{Rank: 0, Device: "NVIDIA H100 80GB HBM3", MemoryTotal: 80 << 30, MemoryUsed: 70 << 30, State: "ready", Steps: 100,
			StepTime: 2 * time.Second, LastStep: ms(15), IdleTime: ms(250), Sequences: 3, Restarts: 1, KVBlocks: 1000, KVBlocksUsed: 250},
		{Rank: 1, Device: "cpu", MemoryTotal: 64 << 30, State: "loading", Lost: true, LoadBytesDone: 10, LoadBytesTotal: 40},
		{Rank: 1, Device: "cpu", State: "ready"}, // a duplicate rank is left out
		{Rank: 2, Device: "cpu", State: "hibernating"},
	}
	mfs, _ := scrape(t, reg)
	r0 := map[string]string{"rank": "0", "device": "NVIDIA H100 80GB HBM3"}
	r1 := map[string]string{"rank": "1", "device": "cpu"}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"gptoss_worker_memory_total_bytes", r0, 80 << 30},
		{"gptoss_worker_memory_used_bytes", r0, 70 << 30},
		{"gptoss_worker_kv_blocks", r0, 1000},
		{"gptoss_worker_kv_blocks_used", r0, 250},
		{"gptoss_worker_steps_total", r0, 100},
		{"gptoss_worker_step_seconds_total", r0, 2},
		{"gptoss_worker_idle_seconds_total", r0, 0.25},
		{"gptoss_worker_last_step_seconds", r0, 0.015},
		{"gptoss_worker_sequences", r0, 3},
		{"gptoss_worker_restarts_total", r0, 1},
		{"gptoss_worker_weights_loaded_bytes", r1, 10},
		{"gptoss_worker_weights_bytes", r1, 40},
		{"gptoss_worker_state", map[string]string{"rank": "0", "state": "ready"}, 1},
		{"gptoss_worker_state", map[string]string{"rank": "0", "state": "loading"}, 0},
		{"gptoss_worker_state", map[string]string{"rank": "1", "state": "lost"}, 1},
		{"gptoss_worker_state", map[string]string{"rank": "1", "state": "loading"}, 0},
		{"gptoss_worker_state", map[string]string{"rank": "2", "state": "hibernating"}, 1},
	} {
		if got := value(series(t, mfs, c.name, c.labels)); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if n := len(mfs["gptoss_worker_kv_blocks"].GetMetric()); n != 1 {
		t.Errorf("gptoss_worker_kv_blocks: %d series, want rank 0's only (the others' are unknown)", n)
	}
	if n := len(mfs["gptoss_worker_steps_total"].GetMetric()); n != 3 {
		t.Errorf("gptoss_worker_steps_total: %d series, want one per rank", n)
	}
	for name, mf := range mfs {
		for _, m := range mf.GetMetric() {
			want := []string{"device", "rank"}
			if name == "gptoss_worker_state" {
				want = []string{"device", "rank", "state"}
			}
			if got := labelNames(m); !slices.Equal(got, want) {
				t.Errorf("%s: labels %v, want %v", name, got, want)
			}
		}
	}
	if n := len(mfs["gptoss_worker_state"].GetMetric()); n != 3*len(workerStates)+1 {
		t.Errorf("gptoss_worker_state: %d series, want %d", n, 3*len(workerStates)+1)
	}
}
