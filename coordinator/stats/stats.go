// Package stats records every finished generation request and serves two
// views of the same data: a JSON snapshot for GET /stats, meant for humans
// and for benchmarks that want ready-made percentiles, and Prometheus
// metrics for GET /metrics, meant for dashboards and alerting that aggregate
// across instances and over arbitrary time ranges.
//
// The two views deliberately use different estimators. Prometheus gets
// fixed-bucket histograms (cheap, mergeable, but coarse); the JSON view keeps
// a bounded window of the most recent raw samples so that it can report exact
// percentiles of recent traffic without unbounded memory.
package stats

import (
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultWindow is the number of most recent samples kept per series for the
// JSON percentiles. 10000 is large enough for stable p99 values and small
// enough that copying and sorting it on every /stats call stays cheap.
const DefaultWindow = 10000

// maxProfiles caps how many distinct profile sections (and Prometheus label
// values) the recorder will create. Profile names on rejected requests can
// come straight from the client (an unknown "model" is answered with 404), so
// without a cap a client could grow memory and metric cardinality without
// bound. Names beyond the cap are folded into OtherProfile, which itself
// takes one of the slots.
const maxProfiles = 64

// UnknownProfile is the section used when a request is reported with an
// empty profile name, e.g. one rejected before its profile was resolved
// (401 before the body is read). A fixed name keeps such requests visible
// instead of producing an empty Prometheus label value.
const UnknownProfile = "_unknown"

// OtherProfile is the section that absorbs profile names once maxProfiles
// distinct names have been seen, bounding memory and label cardinality.
const OtherProfile = "_other"

// unknownEndpoint is the endpoint label of a request that names no
// endpoint: one to a URL the server does not serve.
const unknownEndpoint = "unknown"

// Record is one finished generation request, reported once by the API layer
// when the response has ended. Reporting whole requests (rather than events
// as they happen) keeps Observe a single cheap call and makes every view of
// the request agree.
type Record struct {
	// Profile is the profile name the request ran under; it selects the
	// per-profile section and the "profile" metric label.
	Profile string
	// Endpoint is "chat" or "completions"; it is kept as a label on
	// gptoss_requests_total so the two APIs can be told apart.
	Endpoint string
	// Status is the HTTP status sent. Streams that started are 200 even if
	// they later ended in an error event; FinishReason "error" marks those.
	Status int
	// Stream tells whether the response was streamed (SSE). It is carried
	// for callers' logging symmetry; no metric splits on it.
	Stream bool
	// FinishReason is "stop", "length", "abort", "error", "cancelled"
	// (client went away), or "" when the request was rejected before
	// generation. Latency and token-size samples are recorded only when it
	// is non-empty, because refused requests would drag percentiles to zero.
	FinishReason string
	// PromptTokens is the number of prompt tokens fed to the model.
	PromptTokens int
	// CompletionTokens is the number of tokens generated.
	CompletionTokens int
	// Queue is the time spent waiting for admission by the scheduler.
	Queue time.Duration
	// TTFT is the time from request arrival to the first generated token,
	// or 0 when no token was generated (then no TTFT sample is recorded).
	TTFT time.Duration
	// E2E is the time from request arrival to the end of the response.
	E2E time.Duration
	// ITL holds the gaps between consecutive generated tokens as delivered
	// to the client. Observe copies the values; the caller keeps the slice.
	ITL []time.Duration
	// StreamDelay holds, for each streamed token, the time from the
	// scheduler's delivery to its event being written to the client: the
	// latency the HTTP/SSE path itself adds. Empty for non-streamed requests.
	StreamDelay []time.Duration
	// ParseWarnings counts the structural problems the Harmony parser
	// smoothed over in this request's output (malformed headers, stray
	// control tokens, text outside any message): a model or prompt going
	// wrong shows up here rather than as errors. It is counted in
	// gptoss_harmony_malformed_total: by kind as Malformed breaks it down,
	// the rest under kind "unclassified".
	ParseWarnings int
	// Malformed breaks ParseWarnings down by kind (the Harmony parser's
	// closed set of labels, harmony.Malformation's String). Nil when there
	// were none. Kinds beyond maxMalformedKinds distinct labels, or not
	// shaped like a label, are counted as "other".
	Malformed map[string]int
}

// maxMalformedKinds bounds the distinct kind labels of
// gptoss_harmony_malformed_total (the parser has a dozen).
const maxMalformedKinds = 32

const (
	// unclassifiedKind counts parse warnings reported without a kind.
	unclassifiedKind = "unclassified"
	// otherKind counts kinds past maxMalformedKinds, or badly formed.
	otherKind = "other"
)

// Load is the scheduler's current view of one profile. The recorder does not
// track in-flight work itself because the scheduler already does, and two
// independent counts would drift apart.
type Load struct {
	// Active is the number of requests currently generating.
	Active int
	// Queued is the number of requests waiting for admission.
	Queued int
}

// Option configures a Recorder. Options exist so that tests can shrink the
// window and control time without widening New's signature.
type Option func(*options)

type options struct {
	window      int
	clock       func() time.Time
	model       string
	maxModelLen int
}

// WithWindow sets how many recent samples each series keeps for the JSON
// percentiles (default DefaultWindow). Values below 1 keep the default, since
// a zero-length window could never report anything.
func WithWindow(n int) Option {
	return func(o *options) {
		if n >= 1 {
			o.window = n
		}
	}
}

// WithClock replaces time.Now, so tests can check uptime and last-minute
// rates deterministically. A nil clock keeps time.Now.
func WithClock(now func() time.Time) Option {
	return func(o *options) {
		if now != nil {
			o.clock = now
		}
	}
}

// WithModel names the served model, the model_name label of the vLLM
// series (vllm.go), and its context length, the top of their per-request
// token buckets as vLLM sizes them. An empty name keeps DefaultModelName,
// a length below 1 gpt-oss's 131072.
func WithModel(name string, contextLength int) Option {
	return func(o *options) {
		if name != "" {
			o.model = name
		}
		if contextLength >= 1 {
			o.maxModelLen = contextLength
		}
	}
}

// Recorder accumulates request statistics. It is safe for concurrent use.
// Observe runs on the hot path of every request, so it only appends to
// pre-sized rings and bumps counters under one short mutex hold; percentile
// work (copy and sort) is deferred to Snapshot, which is called rarely.
type Recorder struct {
	clock  func() time.Time
	start  time.Time
	window int
	m      *metrics

	mu       sync.Mutex
	total    *section
	profiles map[string]*profile
	// order remembers creation order so Snapshot and SetLoad iterate
	// deterministically without sorting map keys.
	order []*profile
	// kinds are the malformation kind labels in use (at most
	// maxMalformedKinds).
	kinds map[string]bool
}

// profile couples a per-profile JSON section with its pre-resolved
// Prometheus children, so that Observe does not hash label values for the
// fixed-label series on every request.
type profile struct {
	name string
	sec  *section

	ttft, itl, e2e, queue, promptHist, genHist prometheus.Observer
	streamDelay                                prometheus.Observer
	preemptions                                prometheus.Counter
	promptTotal, genTotal, cancelled           prometheus.Counter
	running, waiting                           prometheus.Gauge

	// Children of the vectors with variable labels, cached on first use
	// and guarded by Recorder.mu. Both label sets are small (a couple of
	// endpoints times a handful of status codes; a few finish reasons).
	requests  map[requestKey]prometheus.Counter
	finished  map[string]prometheus.Counter
	malformed map[string]prometheus.Counter // by kind
}

type requestKey struct {
	endpoint string
	status   int
}

// New builds a Recorder for the given profiles and registers its metrics on
// reg. Profiles are created up front so their series exist (at zero) from the
// first scrape; names seen later are added lazily. reg may be a fresh
// prometheus.NewRegistry() (tests) or prometheus.DefaultRegisterer; a nil reg
// skips registration. Registration errors (e.g. a second Recorder on the same
// registry) are returned rather than panicking, so the caller decides.
func New(profiles []string, reg prometheus.Registerer, opts ...Option) (*Recorder, error) {
	o := options{window: DefaultWindow, clock: time.Now, model: DefaultModelName, maxModelLen: defaultMaxModelLen}
	for _, opt := range opts {
		opt(&o)
	}
	m := newMetrics(o.model, o.maxModelLen)
	if reg != nil {
		if err := m.register(reg); err != nil {
			return nil, err
		}
	}
	r := &Recorder{
		clock:    o.clock,
		start:    o.clock(),
		window:   o.window,
		m:        m,
		total:    newSection(o.window),
		profiles: make(map[string]*profile, len(profiles)),
	}
	for _, name := range profiles {
		r.profileLocked(name)
	}
	return r, nil
}

// ObservePreemption counts a sequence preempted for lack of KV cache room.
func (r *Recorder) ObservePreemption(profile string) {
	r.mu.Lock()
	p := r.profileLocked(profile)
	r.mu.Unlock()
	p.preemptions.Inc()
	r.m.vllm.preemptions.Inc()
}

// ObserveGuide records one step's constrained-decoding masks: how many and
// how long the step waited for them.
func (r *Recorder) ObserveGuide(masks int, took time.Duration) {
	r.m.guideMasks.Add(float64(masks))
	r.m.guideDuration.Observe(took.Seconds())
}

// ObserveStepFailure counts a failed step and what became of its sequences.
func (r *Recorder) ObserveStepFailure(retried, refused int) {
	r.m.stepFailures.Inc()
	r.m.retried.Add(float64(retried))
	r.m.refused.Add(float64(refused))
}

// ObserveStep records one engine step: how long the executor took, how
// many sequences and tokens it carried. Comparing step time with
// inter-token latency tells the engine's share from the serving path's.
func (r *Recorder) ObserveStep(seqs, tokens int, took time.Duration) {
	r.m.stepDuration.Observe(took.Seconds())
	r.m.stepSeqs.Observe(float64(seqs))
	r.m.stepTokens.Observe(float64(tokens))
	r.m.vllm.iterTokens.Observe(float64(tokens))
}

// profileLocked returns the profile for name, creating it when first seen.
// Callers hold r.mu (or own r exclusively, as New does).
func (r *Recorder) profileLocked(name string) *profile {
	if name == "" {
		name = UnknownProfile
	}
	if p, ok := r.profiles[name]; ok {
		return p
	}
	if len(r.profiles) >= maxProfiles-1 { // keep one slot for OtherProfile
		name = OtherProfile
		if p, ok := r.profiles[name]; ok {
			return p
		}
	}
	p := &profile{
		name:        name,
		sec:         newSection(r.window),
		ttft:        r.m.ttft.WithLabelValues(name),
		itl:         r.m.itl.WithLabelValues(name),
		streamDelay: r.m.streamDelay.WithLabelValues(name),
		preemptions: r.m.preemptions.WithLabelValues(name),
		e2e:         r.m.e2e.WithLabelValues(name),
		queue:       r.m.queue.WithLabelValues(name),
		promptHist:  r.m.promptHist.WithLabelValues(name),
		genHist:     r.m.genHist.WithLabelValues(name),
		promptTotal: r.m.promptTotal.WithLabelValues(name),
		genTotal:    r.m.genTotal.WithLabelValues(name),
		cancelled:   r.m.cancelled.WithLabelValues(name),
		running:     r.m.running.WithLabelValues(name),
		waiting:     r.m.waiting.WithLabelValues(name),
		requests:    make(map[requestKey]prometheus.Counter, 4),
		finished:    make(map[string]prometheus.Counter, 4),
		malformed:   make(map[string]prometheus.Counter),
	}
	r.profiles[name] = p
	r.order = append(r.order, p)
	return p
}

// requestCounterLocked caches gptoss_requests_total children; it avoids the
// strconv allocation and label hashing on every request. Callers hold r.mu.
func (r *Recorder) requestCounterLocked(p *profile, endpoint string, status int) prometheus.Counter {
	if endpoint == "" {
		endpoint = unknownEndpoint
	}
	k := requestKey{endpoint, status}
	c, ok := p.requests[k]
	if !ok {
		c = r.m.requests.WithLabelValues(p.name, endpoint, strconv.Itoa(status))
		p.requests[k] = c
	}
	return c
}

// finishedCounterLocked caches gptoss_request_finished_total children.
// Callers hold r.mu.
func (r *Recorder) finishedCounterLocked(p *profile, reason string) prometheus.Counter {
	c, ok := p.finished[reason]
	if !ok {
		c = r.m.finished.WithLabelValues(p.name, reason)
		p.finished[reason] = c
	}
	return c
}

// counterAdd is an increment resolved under the lock, applied after it.
type counterAdd struct {
	c prometheus.Counter
	n int
}

// malformedLocked resolves rec's gptoss_harmony_malformed_total increments:
// Malformed by kind, and whatever of ParseWarnings it does not cover as
// "unclassified". Callers hold r.mu.
func (r *Recorder) malformedLocked(p *profile, rec *Record) []counterAdd {
	if rec.ParseWarnings <= 0 && len(rec.Malformed) == 0 {
		return nil
	}
	var out []counterAdd
	sum := 0
	for kind, n := range rec.Malformed {
		if n > 0 {
			out = append(out, counterAdd{r.malformedCounterLocked(p, kind), n})
			sum += n
		}
	}
	if rest := rec.ParseWarnings - sum; rest > 0 {
		out = append(out, counterAdd{r.malformedCounterLocked(p, unclassifiedKind), rest})
	}
	return out
}

// malformedCounterLocked caches gptoss_harmony_malformed_total children,
// bounding the kind label. Callers hold r.mu.
func (r *Recorder) malformedCounterLocked(p *profile, kind string) prometheus.Counter {
	if !r.kinds[kind] {
		if !kindLabel(kind) || len(r.kinds) >= maxMalformedKinds-1 { // keep a slot for otherKind
			kind = otherKind
		}
		if r.kinds == nil {
			r.kinds = map[string]bool{}
		}
		r.kinds[kind] = true
	}
	c, ok := p.malformed[kind]
	if !ok {
		c = r.m.harmonyMalformed.WithLabelValues(p.name, kind)
		p.malformed[kind] = c
	}
	return c
}

// kindLabel reports whether s is shaped like a malformation kind: 1 to 32
// of a-z and _.
func kindLabel(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && c != '_' {
			return false
		}
	}
	return true
}

// Observe records one finished request. It is called once per request by
// the API layer. Window and counter updates happen under the recorder's
// mutex; Prometheus observations, which are lock-free atomics, happen after
// it is released to keep the critical section short.
//
// Observe does not count cancellations: the API layer reports a client
// disconnect with ObserveCancel, and may additionally report the request with
// FinishReason "cancelled", which then only shows up in the finish-reason
// breakdown, so one disconnect is never counted twice.
func (r *Recorder) Observe(rec Record) {
	now := r.clock()
	generated := rec.FinishReason != ""

	r.mu.Lock()
	p := r.profileLocked(rec.Profile)
	p.sec.observe(&rec, now)
	r.total.observe(&rec, now)
	reqC := r.requestCounterLocked(p, rec.Endpoint, rec.Status)
	var finC prometheus.Counter
	var malC []counterAdd
	if generated {
		finC = r.finishedCounterLocked(p, rec.FinishReason)
		malC = r.malformedLocked(p, &rec)
	}
	r.mu.Unlock()

	r.m.vllm.observe(&rec, generated)
	reqC.Inc()
	if rec.PromptTokens > 0 {
		p.promptTotal.Add(float64(rec.PromptTokens))
	}
	if rec.CompletionTokens > 0 {
		p.genTotal.Add(float64(rec.CompletionTokens))
	}
	if !generated {
		return
	}
	finC.Inc()
	p.e2e.Observe(rec.E2E.Seconds())
	p.queue.Observe(rec.Queue.Seconds())
	if rec.TTFT > 0 {
		p.ttft.Observe(rec.TTFT.Seconds())
	}
	for _, d := range rec.ITL {
		p.itl.Observe(d.Seconds())
	}
	for _, d := range rec.StreamDelay {
		p.streamDelay.Observe(d.Seconds())
	}
	for _, a := range malC {
		a.c.Add(float64(a.n))
	}
	p.promptHist.Observe(float64(rec.PromptTokens))
	p.genHist.Observe(float64(rec.CompletionTokens))
}

// ObserveCancel counts a client that disconnected before its response ended.
// It is separate from Observe because a disconnect is noticed where the
// connection is watched, which is not necessarily where the Record is built,
// and disconnects while queued may never produce a Record at all.
func (r *Recorder) ObserveCancel(profile string) {
	r.mu.Lock()
	p := r.profileLocked(profile)
	p.sec.cancelled++
	r.total.cancelled++
	r.mu.Unlock()
	p.cancelled.Inc()
}

// ObserveRejected counts a request refused before generation (400, 401, 404,
// 413, 429, 503, ...). Such requests add to the request and error counts and
// to the last-minute request rate, but contribute no latency samples, since
// they never reached the model. endpoint is the endpoint the request was
// sent to ("chat", "completions"; "" for a URL that is no endpoint, counted
// as "unknown"), so gptoss_requests_total counts every request under its
// endpoint whatever its status. code is the OpenAI-style error code (e.g.
// "rate_limit_exceeded"); it is exported as gptoss_requests_rejected_total so
// operators can tell overload from bad input without parsing logs.
func (r *Recorder) ObserveRejected(profile, endpoint string, status int, code string) {
	now := r.clock()
	r.mu.Lock()
	p := r.profileLocked(profile)
	p.sec.count(status, false, now)
	r.total.count(status, false, now)
	reqC := r.requestCounterLocked(p, endpoint, status)
	r.mu.Unlock()
	reqC.Inc()
	r.m.rejected.WithLabelValues(p.name, code).Inc()
}

// SetLoad updates the running/waiting gauges from the scheduler's view. It is
// meant to be called just before a scrape or periodically. Known profiles
// missing from load are set to zero, so a profile that went idle (and that
// the scheduler therefore omits) does not keep reporting stale load.
func (r *Recorder) SetLoad(load map[string]Load) {
	r.mu.Lock()
	agg := make(map[*profile]Load, len(load))
	for name, l := range load {
		p := r.profileLocked(name)
		a := agg[p]
		a.Active += l.Active
		a.Queued += l.Queued
		agg[p] = a
	}
	ps := slices.Clone(r.order)
	r.mu.Unlock()
	var total Load
	for _, p := range ps {
		l := agg[p]
		p.running.Set(float64(l.Active))
		p.waiting.Set(float64(l.Queued))
		total.Active += l.Active
		total.Queued += l.Queued
	}
	r.m.vllm.running.Set(float64(total.Active))
	r.m.vllm.waiting.Set(float64(total.Queued))
}

// Quantiles holds percentiles of a latency series, in seconds.
type Quantiles struct {
	// P50 is the median.
	P50 float64 `json:"p50"`
	// P95 is the 95th percentile.
	P95 float64 `json:"p95"`
	// P99 is the 99th percentile.
	P99 float64 `json:"p99"`
}

// LatencyStats adds the mean to Quantiles for end-to-end latency, where the
// mean is what throughput arithmetic (Little's law) needs.
type LatencyStats struct {
	// P50 is the median.
	P50 float64 `json:"p50"`
	// P95 is the 95th percentile.
	P95 float64 `json:"p95"`
	// P99 is the 99th percentile.
	P99 float64 `json:"p99"`
	// Mean is the arithmetic mean over the same window as the percentiles.
	Mean float64 `json:"mean"`
}

// QueueStats reports queue-time percentiles; p99 is omitted because queue
// time is dominated by bursts and its tail is better read from Prometheus.
type QueueStats struct {
	// P50 is the median.
	P50 float64 `json:"p50"`
	// P95 is the 95th percentile.
	P95 float64 `json:"p95"`
}

// Section is the statistics of one profile, or of all profiles together for
// Snapshot.Total. Counters are since start; percentiles cover the most recent
// window of samples; *_last_minute and per-second rates cover the last 60 s.
type Section struct {
	// RequestsTotal counts every reported request, rejected ones included.
	RequestsTotal uint64 `json:"requests_total"`
	// RequestsOK counts 2xx requests that did not end in an error event.
	RequestsOK uint64 `json:"requests_ok"`
	// RequestsClientError counts 4xx responses.
	RequestsClientError uint64 `json:"requests_client_error"`
	// RequestsServerError counts 5xx responses plus streams that started
	// with 200 but ended with finish_reason "error".
	RequestsServerError uint64 `json:"requests_server_error"`
	// CancelledTotal counts client disconnects reported by ObserveCancel.
	CancelledTotal uint64 `json:"cancelled_total"`
	// QPS is RequestsTotal divided by uptime.
	QPS float64 `json:"qps"`
	// QPSLastMinute is requests finished in the last 60 s divided by
	// min(60 s, uptime), so it is meaningful right after start.
	QPSLastMinute float64 `json:"qps_last_minute"`
	// ErrorRate is RequestsServerError / RequestsTotal (0 with no requests).
	// Client errors are excluded: they say nothing about server health.
	ErrorRate float64 `json:"error_rate"`
	// Latency is end-to-end request latency.
	Latency LatencyStats `json:"latency_seconds"`
	// TTFT is time to first token.
	TTFT Quantiles `json:"ttft_seconds"`
	// InterTokenLatency is the gap between consecutive delivered tokens.
	InterTokenLatency Quantiles `json:"inter_token_latency_seconds"`
	// StreamDelay is, per streamed token, the time from the scheduler's
	// delivery to the event's write: what the serving path adds.
	StreamDelay Quantiles `json:"stream_delay_seconds"`
	// Queue is the time spent waiting for admission.
	Queue QueueStats `json:"queue_seconds"`
	// PromptTokensTotal is the sum of prompt tokens since start.
	PromptTokensTotal uint64 `json:"prompt_tokens_total"`
	// CompletionTokensTotal is the sum of generated tokens since start.
	CompletionTokensTotal uint64 `json:"completion_tokens_total"`
	// OutputTokensPerSecond is completion tokens of requests finished in the
	// last 60 s divided by min(60 s, uptime).
	OutputTokensPerSecond float64 `json:"output_tokens_per_second"`
	// Active is the number of generating requests, from the load argument.
	Active int `json:"active"`
	// Queued is the number of waiting requests, from the load argument.
	Queued int `json:"queued"`
}

// Snapshot is the JSON body of GET /stats. Every float is finite, so
// json.Marshal never fails on it.
type Snapshot struct {
	// UptimeSeconds is the time since the Recorder was created.
	UptimeSeconds float64 `json:"uptime_seconds"`
	// Total aggregates all profiles; Active/Queued are sums over load.
	Total Section `json:"total"`
	// Profiles maps profile name to its section. It includes every
	// configured profile, every name seen since, and every name in load.
	Profiles map[string]Section `json:"profiles"`
}

// Snapshot computes the JSON view. load supplies the current active/queued
// counts per profile (nil is fine). Raw windows are copied under the mutex
// and sorted after releasing it, so Observe is blocked only for the copy.
func (r *Recorder) Snapshot(load map[string]Load) Snapshot {
	now := r.clock()
	uptime := now.Sub(r.start).Seconds()
	if uptime < 0 {
		uptime = 0
	}
	nowSec := now.Unix()

	r.mu.Lock()
	total := r.total.copyOut(nowSec)
	per := make([]sectionCopy, len(r.order))
	names := make([]string, len(r.order))
	for i, p := range r.order {
		per[i] = p.sec.copyOut(nowSec)
		names[i] = p.name
	}
	r.mu.Unlock()

	s := Snapshot{
		UptimeSeconds: uptime,
		Total:         total.section(uptime),
		Profiles:      make(map[string]Section, len(names)+len(load)),
	}
	for i, name := range names {
		s.Profiles[name] = per[i].section(uptime)
	}
	for name, l := range load {
		if name == "" {
			name = UnknownProfile
		}
		sec := s.Profiles[name] // zero section for a name never observed
		sec.Active += l.Active
		sec.Queued += l.Queued
		s.Profiles[name] = sec
		s.Total.Active += l.Active
		s.Total.Queued += l.Queued
	}
	return s
}

// section is the mutable per-profile (or total) state behind a Section.
// All fields are guarded by Recorder.mu.
type section struct {
	requests, ok, clientErr, serverErr, cancelled uint64
	promptTokens, completionTokens                uint64

	latency, ttft, queue, itl, streamDelay window
	rate                                   rateRing
}

func newSection(n int) *section {
	return &section{
		latency: window{size: n},
		ttft:    window{size: n},
		queue:   window{size: n},
		itl:     window{size: n},
		// streamDelay: one sample per streamed token, like itl.
		streamDelay: window{size: n},
	}
}

// count classifies one request by status and adds it to the request rate.
func (s *section) count(status int, streamError bool, now time.Time) {
	s.requests++
	switch {
	case status >= 500 || streamError:
		s.serverErr++
	case status >= 400:
		s.clientErr++
	case status >= 200 && status < 300:
		s.ok++
	}
	s.rate.add(now.Unix(), 1, 0)
}

func (s *section) observe(rec *Record, now time.Time) {
	s.count(rec.Status, rec.FinishReason == "error", now)
	if rec.PromptTokens > 0 {
		s.promptTokens += uint64(rec.PromptTokens)
	}
	if rec.CompletionTokens > 0 {
		s.completionTokens += uint64(rec.CompletionTokens)
		s.rate.add(now.Unix(), 0, uint64(rec.CompletionTokens))
	}
	if rec.FinishReason == "" {
		return
	}
	s.latency.add(rec.E2E)
	s.queue.add(rec.Queue)
	if rec.TTFT > 0 {
		s.ttft.add(rec.TTFT)
	}
	s.itl.addAll(rec.ITL)
	s.streamDelay.addAll(rec.StreamDelay)
}

// sectionCopy is a consistent copy of a section taken under the mutex, so
// sorting and arithmetic can run without holding it.
type sectionCopy struct {
	requests, ok, clientErr, serverErr, cancelled uint64
	promptTokens, completionTokens                uint64
	lastMinReqs, lastMinToks                      uint64
	latency, ttft, queue, itl, streamDelay        []time.Duration
}

func (s *section) copyOut(nowSec int64) sectionCopy {
	reqs, toks := s.rate.sum(nowSec)
	return sectionCopy{
		requests:         s.requests,
		ok:               s.ok,
		clientErr:        s.clientErr,
		serverErr:        s.serverErr,
		cancelled:        s.cancelled,
		promptTokens:     s.promptTokens,
		completionTokens: s.completionTokens,
		lastMinReqs:      reqs,
		lastMinToks:      toks,
		latency:          slices.Clone(s.latency.buf),
		ttft:             slices.Clone(s.ttft.buf),
		queue:            slices.Clone(s.queue.buf),
		itl:              slices.Clone(s.itl.buf),
		streamDelay:      slices.Clone(s.streamDelay.buf),
	}
}

func (c *sectionCopy) section(uptime float64) Section {
	out := Section{
		RequestsTotal:         c.requests,
		RequestsOK:            c.ok,
		RequestsClientError:   c.clientErr,
		RequestsServerError:   c.serverErr,
		CancelledTotal:        c.cancelled,
		PromptTokensTotal:     c.promptTokens,
		CompletionTokensTotal: c.completionTokens,
		QPS:                   ratio(float64(c.requests), uptime),
		QPSLastMinute:         ratio(float64(c.lastMinReqs), math.Min(uptime, rateSpan)),
		OutputTokensPerSecond: ratio(float64(c.lastMinToks), math.Min(uptime, rateSpan)),
		ErrorRate:             ratio(float64(c.serverErr), float64(c.requests)),
	}
	slices.Sort(c.latency)
	slices.Sort(c.ttft)
	slices.Sort(c.queue)
	slices.Sort(c.itl)
	slices.Sort(c.streamDelay)
	out.Latency = LatencyStats{
		P50:  quantile(c.latency, 0.50),
		P95:  quantile(c.latency, 0.95),
		P99:  quantile(c.latency, 0.99),
		Mean: mean(c.latency),
	}
	out.TTFT = Quantiles{
		P50: quantile(c.ttft, 0.50),
		P95: quantile(c.ttft, 0.95),
		P99: quantile(c.ttft, 0.99),
	}
	out.InterTokenLatency = Quantiles{
		P50: quantile(c.itl, 0.50),
		P95: quantile(c.itl, 0.95),
		P99: quantile(c.itl, 0.99),
	}
	out.StreamDelay = Quantiles{
		P50: quantile(c.streamDelay, 0.50),
		P95: quantile(c.streamDelay, 0.95),
		P99: quantile(c.streamDelay, 0.99),
	}
	out.Queue = QueueStats{
		P50: quantile(c.queue, 0.50),
		P95: quantile(c.queue, 0.95),
	}
	return out
}

// ratio returns a/b, or 0 when b is not positive, so that an idle or
// just-started recorder reports 0 instead of NaN or Inf (JSON cannot encode
// either).
func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}

// quantile returns the nearest-rank q-quantile of sorted, in seconds, or 0
// for no samples. Nearest rank always returns an observed value, which keeps
// small windows honest (no interpolation between two unrelated requests).
func quantile(sorted []time.Duration, q float64) float64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(n))) - 1
	i = max(0, min(i, n-1))
	return sorted[i].Seconds()
}

func mean(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	var sum float64
	for _, d := range ds {
		sum += d.Seconds()
	}
	return sum / float64(len(ds))
}

// window is a fixed-capacity ring of the most recent samples. It grows up to
// its size on demand, so profiles that see little traffic stay small, and
// then overwrites the oldest entry. Order is irrelevant because Snapshot
// sorts the copy.
type window struct {
	buf  []time.Duration
	next int
	size int
}

func (w *window) add(d time.Duration) {
	if len(w.buf) < w.size {
		w.buf = append(w.buf, d)
		return
	}
	w.buf[w.next] = d
	w.next++
	if w.next == w.size {
		w.next = 0
	}
}

func (w *window) addAll(ds []time.Duration) {
	if len(ds) >= w.size {
		// Only the last size values survive anyway.
		ds = ds[len(ds)-w.size:]
	}
	for len(ds) > 0 && len(w.buf) < w.size {
		w.buf = append(w.buf, ds[0])
		ds = ds[1:]
	}
	for len(ds) > 0 {
		n := copy(w.buf[w.next:], ds)
		ds = ds[n:]
		w.next += n
		if w.next == w.size {
			w.next = 0
		}
	}
}

// rateSpan is the span of the last-minute rates, in seconds.
const rateSpan = 60

// rateRing counts requests and completion tokens in per-second buckets over
// the last rateSpan seconds. Unlike a list of timestamps its memory is fixed
// whatever the request rate.
type rateRing struct {
	sec  [rateSpan]int64 // unix second a bucket currently holds
	reqs [rateSpan]uint64
	toks [rateSpan]uint64
}

func (r *rateRing) add(sec int64, reqs, toks uint64) {
	i := int(((sec % rateSpan) + rateSpan) % rateSpan)
	switch {
	case r.sec[i] == sec:
	case r.sec[i] < sec:
		// The bucket holds a second at least a minute old: recycle it.
		r.sec[i], r.reqs[i], r.toks[i] = sec, 0, 0
	default:
		// sec is a minute or more older than what the bucket holds
		// (the clock went back); it is outside the window anyway.
		return
	}
	r.reqs[i] += reqs
	r.toks[i] += toks
}

// sum totals the buckets whose second lies in (now-rateSpan, now].
func (r *rateRing) sum(now int64) (reqs, toks uint64) {
	for i := range r.sec {
		if s := r.sec[i]; s > now-rateSpan && s <= now {
			reqs += r.reqs[i]
			toks += r.toks[i]
		}
	}
	return reqs, toks
}
