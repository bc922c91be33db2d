package stats

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Histogram buckets. They follow vLLM's choices so dashboards written for
// vLLM-style servers read these metrics without rescaling.
var (
	ttftBuckets = []float64{
		0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
		0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640,
	}
	itlBuckets = []float64{
		0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
		0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80,
	}
	requestLatencyBuckets = []float64{
		0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60,
		120, 240, 480, 960, 1920, 7680,
	}
	streamDelayBuckets = []float64{
		0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1,
	}
	tokenBuckets = []float64{
		1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000,
		20000, 50000, 100000,
	}
)

// metrics holds the Prometheus collectors. They are created per Recorder
// (not as package globals) so tests can use fresh registries and several
// recorders can coexist.
type metrics struct {
	ttft, itl, e2e, queue, promptHist, genHist *prometheus.HistogramVec
	streamDelay                                *prometheus.HistogramVec

	requests, finished, rejected     *prometheus.CounterVec
	promptTotal, genTotal, cancelled *prometheus.CounterVec
	harmonyMalformed                 *prometheus.CounterVec
	preemptions                      *prometheus.CounterVec
	stepFailures, retried, refused   prometheus.Counter
	running, waiting                 *prometheus.GaugeVec

	// Engine steps, over all profiles: a step serves every profile's
	// sequences at once.
	stepDuration, stepSeqs, stepTokens prometheus.Histogram
	// Constrained decoding: the time a step waited for its masks.
	guideDuration prometheus.Histogram
	guideMasks    prometheus.Counter

	// vllm is the same data under vLLM's names (vllm.go).
	vllm *vllmMetrics
}

var stepBuckets = []float64{
	0.0005, 0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.025, 0.03,
	0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5,
}

func newMetrics(model string, maxModelLen int) *metrics {
	hist := func(name, help string, buckets []float64) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: name, Help: help, Buckets: buckets,
		}, []string{"profile"})
	}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: name, Help: help,
		}, append([]string{"profile"}, labels...))
	}
	gauge := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: name, Help: help,
		}, []string{"profile"})
	}
	return &metrics{
		ttft: hist("gptoss_time_to_first_token_seconds",
			"Time from request arrival to the first generated token.", ttftBuckets),
		itl: hist("gptoss_inter_token_latency_seconds",
			"Gap between consecutive generated tokens as delivered to the client.", itlBuckets),
		streamDelay: hist("gptoss_stream_delay_seconds",
			"Per streamed token, time from the scheduler's delivery to the event's write to the client.", streamDelayBuckets),
		e2e: hist("gptoss_e2e_request_latency_seconds",
			"Time from request arrival to the end of the response.", requestLatencyBuckets),
		queue: hist("gptoss_request_queue_time_seconds",
			"Time a request waited for admission by the scheduler.", requestLatencyBuckets),
		promptHist: hist("gptoss_request_prompt_tokens",
			"Prompt tokens per generated request.", tokenBuckets),
		genHist: hist("gptoss_request_generation_tokens",
			"Generated tokens per request.", tokenBuckets),

		requests: counter("gptoss_requests_total",
			"Finished or rejected requests by endpoint and HTTP status.", "endpoint", "status"),
		finished: counter("gptoss_request_finished_total",
			"Requests that reached generation, by finish reason.", "finish_reason"),
		rejected: counter("gptoss_requests_rejected_total",
			"Requests refused before generation, by error code.", "code"),
		promptTotal: counter("gptoss_prompt_tokens_total",
			"Prompt tokens processed."),
		genTotal: counter("gptoss_generation_tokens_total",
			"Tokens generated."),
		cancelled: counter("gptoss_requests_cancelled_total",
			"Requests whose client disconnected before the response ended."),
		preemptions: counter("gptoss_preemptions_total",
			"Sequences preempted for lack of KV cache room and recomputed later."),
		stepFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "gptoss_step_failures_total",
			Help: "Engine steps that failed (a worker died or hung, or the engine returned an error)."}),
		retried: prometheus.NewCounter(prometheus.CounterOpts{Name: "gptoss_sequences_retried_total",
			Help: "Sequences of failed steps that were requeued and recomputed."}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{Name: "gptoss_sequences_refused_total",
			Help: "Sequences refused after a second failed step (suspected of crashing the engine)."}),
		harmonyMalformed: counter("gptoss_harmony_malformed_total",
			"Structural problems in model output that the Harmony parser smoothed over instead of failing the request (the output degraded to text), by kind.", "kind"),

		running: gauge("gptoss_num_requests_running",
			"Requests currently generating, as reported by the scheduler."),
		waiting: gauge("gptoss_num_requests_waiting",
			"Requests currently waiting for admission, as reported by the scheduler."),

		stepDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "gptoss_step_duration_seconds",
			Help: "Time the engine took for one step (one forward pass over the batch).", Buckets: stepBuckets}),
		stepSeqs: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "gptoss_step_sequences",
			Help: "Sequences in one step.", Buckets: tokenBuckets}),
		stepTokens: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "gptoss_step_tokens",
			Help: "Tokens processed in one step (prefill chunks plus one per decoding sequence).", Buckets: tokenBuckets}),
		guideDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "gptoss_guide_mask_seconds",
			Help: "Time one step waited for the token masks of its constrained sequences (structured output, forced calls, reasoning budgets), computed in parallel.", Buckets: stepBuckets}),
		guideMasks: prometheus.NewCounter(prometheus.CounterOpts{Name: "gptoss_guide_masks_total",
			Help: "Token masks computed for constrained sequences."}),

		vllm: newVLLMMetrics(model, maxModelLen),
	}
}

// register registers every collector. On the first error it unregisters the
// ones already added, so a failed New leaves the registry as it found it and
// the caller may retry.
func (m *metrics) register(reg prometheus.Registerer) error {
	cs := []prometheus.Collector{
		m.ttft, m.itl, m.streamDelay, m.e2e, m.queue, m.promptHist, m.genHist,
		m.requests, m.finished, m.rejected, m.promptTotal, m.genTotal, m.cancelled, m.harmonyMalformed, m.preemptions,
		m.stepFailures, m.retried, m.refused, m.running, m.waiting, m.stepDuration, m.stepSeqs, m.stepTokens, m.guideDuration, m.guideMasks,
	}
	cs = append(cs, m.vllm.vecs...)
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return err
		}
	}
	return nil
}
