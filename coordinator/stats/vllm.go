package stats

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// vLLM-compatible metrics. Dashboards (vLLM's Grafana board, llm-d's),
// autoscalers (KEDA on vllm:num_requests_waiting, the Gateway API
// inference extension on vllm:kv_cache_usage_perc) and benchmark
// harnesses read vLLM's names and labels; exporting the same series next
// to the gptoss_* ones lets them point at this server unchanged. The
// names, label sets, bucket boundaries and the counters' exposed names
// (client_golang does not append _total, so the Go names carry it) follow
// vLLM's v1 engine (vllm/v1/metrics/loggers.py).
//
// Every series carries model_name (the served model id) and engine: vLLM
// numbers its engine cores, and this server has one scheduler, engine "0".
const (
	vllmEngine = "0"

	// DefaultModelName labels the vLLM series when New is given no
	// WithModel: a recorder built by a test, say.
	DefaultModelName = "gpt-oss"

	// defaultMaxModelLen bounds the token histograms' buckets without
	// WithModel: gpt-oss's context.
	defaultMaxModelLen = 131072
)

// vLLM's finish reasons (vllm.v1.engine.FINISH_REASON_STRINGS), whose
// vllm:request_success_total series exist from the first scrape, at zero,
// as vLLM's do ("repetition" is vLLM's repetition detection, which this
// server does not have: it stays at zero).
var vllmFinishReasons = []string{"stop", "length", "abort", "error", "repetition"}

// vLLM's bucket boundaries.
var (
	vllmTTFTBuckets = []float64{
		0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
		0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560,
	}
	vllmITLBuckets = []float64{
		0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
		1, 2.5, 5, 7.5, 10, 20, 40, 80,
	}
	// vllm:iteration_tokens_total's. (requestLatencyBuckets, in
	// metrics.go, are vLLM's request_latency_buckets, for e2e, queue,
	// prefill, decode and inference time.)
	vllmIterationBuckets = []float64{1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384}
)

// buckets125 is vLLM's build_1_2_5_buckets: 1, 2, 5, 10, 20, 50, ... up to
// top (inclusive), the buckets of its per-request token histograms.
func buckets125(top int) []float64 {
	var out []float64
	for base := 1; ; base *= 10 {
		for _, m := range []int{1, 2, 5} {
			if m*base > top {
				return out
			}
			out = append(out, float64(m*base))
		}
	}
}

// vllmMetrics are the vLLM-named collectors and their one child each
// (model_name and engine are fixed per Recorder), resolved once so that the
// hot path does no label hashing.
type vllmMetrics struct {
	vecs []prometheus.Collector

	running, waiting                      prometheus.Gauge
	promptTokens, generationTokens        prometheus.Counter
	preemptions                           prometheus.Counter
	ttft, itl, e2e, queue                 prometheus.Observer
	prefill, decode, inference            prometheus.Observer
	requestPrompt, requestGen, iterTokens prometheus.Observer
	success                               *prometheus.CounterVec
	model                                 string
	successMu                             sync.Mutex
	successBy                             map[string]prometheus.Counter
}

// maxFinishReasons bounds vllm:request_success_total's finished_reason
// values; past it, reasons count as "other".
const maxFinishReasons = 16

func newVLLMMetrics(model string, maxModelLen int) *vllmMetrics {
	labels := []string{"model_name", "engine"}
	m := &vllmMetrics{model: model, successBy: make(map[string]prometheus.Counter, maxFinishReasons)}
	gauge := func(name, help string) prometheus.Gauge {
		v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
		m.vecs = append(m.vecs, v)
		return v.WithLabelValues(model, vllmEngine)
	}
	counter := func(name, help string) prometheus.Counter {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		m.vecs = append(m.vecs, v)
		return v.WithLabelValues(model, vllmEngine)
	}
	hist := func(name, help string, buckets []float64) prometheus.Observer {
		v := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
		m.vecs = append(m.vecs, v)
		return v.WithLabelValues(model, vllmEngine)
	}
	tokens := buckets125(maxModelLen)

	m.running = gauge("vllm:num_requests_running", "Number of requests in model execution batches.")
	m.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
	m.promptTokens = counter("vllm:prompt_tokens_total", "Number of prefill tokens processed.")
	m.generationTokens = counter("vllm:generation_tokens_total", "Number of generation tokens processed.")
	m.preemptions = counter("vllm:num_preemptions_total", "Cumulative number of preemption from the engine.")
	m.success = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vllm:request_success_total",
		Help: "Count of successfully processed requests."}, append(labels, "finished_reason"))
	m.vecs = append(m.vecs, m.success)
	for _, r := range vllmFinishReasons {
		m.successBy[r] = m.success.WithLabelValues(model, vllmEngine, r)
	}

	m.ttft = hist("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", vllmTTFTBuckets)
	m.itl = hist("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", vllmITLBuckets)
	m.e2e = hist("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", requestLatencyBuckets)
	m.queue = hist("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", requestLatencyBuckets)
	m.inference = hist("vllm:request_inference_time_seconds", "Histogram of time spent in RUNNING phase for request.", requestLatencyBuckets)
	m.prefill = hist("vllm:request_prefill_time_seconds", "Histogram of time spent in PREFILL phase for request.", requestLatencyBuckets)
	m.decode = hist("vllm:request_decode_time_seconds", "Histogram of time spent in DECODE phase for request.", requestLatencyBuckets)
	m.requestPrompt = hist("vllm:request_prompt_tokens", "Number of prefill tokens processed.", tokens)
	m.requestGen = hist("vllm:request_generation_tokens", "Number of generation tokens processed.", tokens)
	m.iterTokens = hist("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", vllmIterationBuckets)
	return m
}

// vllmFinishReason maps a Record's finish reason to vLLM's finished_reason:
// a client that went away is vLLM's "abort". The others ("stop",
// "length", "abort", "error", and "tool_calls", which vLLM reports as
// "stop" but dashboards may want apart) pass through.
func vllmFinishReason(reason string) string {
	if reason == "cancelled" {
		return "abort"
	}
	return reason
}

// successCounter is vllm:request_success_total's child for reason, created
// on first use; reasons not shaped like a label, or past maxFinishReasons,
// count as "other".
func (m *vllmMetrics) successCounter(reason string) prometheus.Counter {
	reason = vllmFinishReason(reason)
	m.successMu.Lock()
	defer m.successMu.Unlock()
	if c, ok := m.successBy[reason]; ok {
		return c
	}
	if !kindLabel(reason) || len(m.successBy) >= maxFinishReasons-1 { // keep a slot for "other"
		reason = otherKind
		if c, ok := m.successBy[reason]; ok {
			return c
		}
	}
	c := m.success.WithLabelValues(m.model, vllmEngine, reason)
	m.successBy[reason] = c
	return c
}

// observe records one finished request in the vLLM series. vLLM splits a
// request's life into queued (waiting for admission), prefill (admitted
// to first token), decode (first token to the last) and inference
// (prefill and decode); the Record's Queue, TTFT and E2E give them, with
// E2E ending at the response's end rather than at the last token.
func (m *vllmMetrics) observe(rec *Record, generated bool) {
	if rec.PromptTokens > 0 {
		m.promptTokens.Add(float64(rec.PromptTokens))
	}
	if rec.CompletionTokens > 0 {
		m.generationTokens.Add(float64(rec.CompletionTokens))
	}
	if !generated {
		return
	}
	m.successCounter(rec.FinishReason).Inc()
	m.e2e.Observe(rec.E2E.Seconds())
	m.queue.Observe(rec.Queue.Seconds())
	m.inference.Observe(max(rec.E2E-rec.Queue, 0).Seconds())
	if rec.TTFT > 0 {
		m.ttft.Observe(rec.TTFT.Seconds())
		m.prefill.Observe(max(rec.TTFT-rec.Queue, 0).Seconds())
		m.decode.Observe(max(rec.E2E-rec.TTFT, 0).Seconds())
	}
	for _, d := range rec.ITL {
		m.itl.Observe(d.Seconds())
	}
	m.requestPrompt.Observe(float64(rec.PromptTokens))
	m.requestGen.Observe(float64(rec.CompletionTokens))
}

// KV is the paged KV cache as the scheduler sees it, for the vLLM cache
// series. The scheduler counts in blocks; BlockSize turns them into the
// tokens vLLM counts in.
type KV struct {
	// BlockSize is the number of token positions per block.
	BlockSize int
	// Blocks is the full-attention pool's size; UsedBlocks of them are
	// held by running sequences. Blocks held only by the prefix cache are
	// free for the taking, and vLLM counts such blocks as free too.
	Blocks, UsedBlocks int
	// PrefixLookups is the whole prompt blocks looked up in the prefix
	// cache since start, PrefixHits those found there.
	PrefixLookups, PrefixHits int64
}

// kvCollector exports the scheduler's KV cache as vLLM does, read at
// scrape time so that the gauge is current and the counters need no
// bookkeeping on the scheduler's side.
type kvCollector struct {
	usage func() (KV, bool)

	usageDesc, queriesDesc, hitsDesc *prometheus.Desc

	// The scheduler's counts start over when it rebuilds its block pools
	// (a model reload with a new geometry); offsets keep the exported
	// counters monotonic across that.
	mu                        sync.Mutex
	lastQueries, lastHits     float64
	offsetQueries, offsetHits float64
}

// NewKVCollector returns the collector of vllm:kv_cache_usage_perc,
// vllm:prefix_cache_queries_total and vllm:prefix_cache_hits_total for the
// served model. usage reports the cache now; false (no real engine, or no
// step yet) exports zeros, so the series exist from the first scrape.
//
// vLLM counts prefix-cache queries and hits in tokens: queries are the
// prompt tokens looked up, hits the tokens found. The scheduler looks up
// whole blocks (a prompt's partial last block is never cached), so both
// are blocks times the block size: queries leave out the tokens of each
// prompt's partial last block, which vLLM counts as missed.
func NewKVCollector(model string, usage func() (KV, bool)) prometheus.Collector {
	labels := prometheus.Labels{"model_name": model, "engine": vllmEngine}
	return &kvCollector{
		usage: usage,
		usageDesc: prometheus.NewDesc("vllm:kv_cache_usage_perc",
			"KV-cache usage. 1 means 100 percent usage.", nil, labels),
		queriesDesc: prometheus.NewDesc("vllm:prefix_cache_queries_total",
			"Prefix cache queries, in terms of number of queried tokens (whole blocks).", nil, labels),
		hitsDesc: prometheus.NewDesc("vllm:prefix_cache_hits_total",
			"Prefix cache hits, in terms of number of cached tokens.", nil, labels),
	}
}

// Describe implements prometheus.Collector.
func (c *kvCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.usageDesc
	ch <- c.queriesDesc
	ch <- c.hitsDesc
}

// Collect implements prometheus.Collector.
func (c *kvCollector) Collect(ch chan<- prometheus.Metric) {
	var kv KV
	ok := false
	if c.usage != nil {
		kv, ok = c.usage()
	}
	perc := 0.0
	if ok && kv.Blocks > 0 {
		perc = min(max(float64(kv.UsedBlocks)/float64(kv.Blocks), 0), 1)
	}
	bs := float64(max(kv.BlockSize, 0))
	queries, hits := c.monotonic(ok, float64(kv.PrefixLookups)*bs, float64(kv.PrefixHits)*bs)
	ch <- prometheus.MustNewConstMetric(c.usageDesc, prometheus.GaugeValue, perc)
	ch <- prometheus.MustNewConstMetric(c.queriesDesc, prometheus.CounterValue, queries)
	ch <- prometheus.MustNewConstMetric(c.hitsDesc, prometheus.CounterValue, hits)
}

// monotonic turns the scheduler's counts into counters that never go
// down: a count below the last one means the scheduler started over, and
// what it had counted before is kept as an offset. Without a current
// count (ok false) the counters stay where they were.
func (c *kvCollector) monotonic(ok bool, queries, hits float64) (float64, float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ok {
		if queries < c.lastQueries || hits < c.lastHits {
			c.offsetQueries += c.lastQueries
			c.offsetHits += c.lastHits
		}
		c.lastQueries, c.lastHits = queries, hits
	}
	return c.offsetQueries + c.lastQueries, c.offsetHits + c.lastHits
}
