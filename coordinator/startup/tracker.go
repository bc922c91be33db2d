package startup

import (
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/gptoss/server/coordinator/hub"
)

// Phases of the start-up, in order; Failed ends it early.
const (
	PhaseDownloading = "downloading"
	PhaseLoading     = "loading"
	PhaseReady       = "ready"
	PhaseFailed      = "failed"
)

// WorkerLoad is one worker's weight loading, from its heartbeats.
type WorkerLoad struct {
	Rank        int
	State       string
	Done, Total int64
}

// Tracker holds the start-up's phase and progress: the download's bytes
// per file, the workers' loaded bytes per rank. /health reads it (Status),
// the API asks it whether requests may run (Pending), Display draws it.
// Safe for concurrent use.
type Tracker struct {
	mu      sync.Mutex
	src     Source
	phase   string
	err     string
	started time.Time
	phaseAt time.Time
	files   map[string]*item
	workers func() []WorkerLoad
	dl, ld  rate
}

type item struct{ done, total int64 }

// rate estimates bytes per second over the last few seconds.
type rate struct {
	samples []sample
}

type sample struct {
	at   time.Time
	done int64
}

const rateWindow = 8 * time.Second

func (r *rate) add(at time.Time, done int64) {
	if n := len(r.samples); n > 0 && at.Sub(r.samples[n-1].at) < 100*time.Millisecond {
		r.samples[n-1].done = done
		return
	}
	r.samples = append(r.samples, sample{at, done})
	for len(r.samples) > 2 && at.Sub(r.samples[1].at) > rateWindow {
		r.samples = r.samples[1:]
	}
}

func (r *rate) perSecond() float64 {
	if len(r.samples) < 2 {
		return 0
	}
	a, b := r.samples[0], r.samples[len(r.samples)-1]
	dt := b.at.Sub(a.at).Seconds()
	if dt <= 0 || b.done <= a.done {
		return 0
	}
	return float64(b.done-a.done) / dt
}

// NewTracker returns a tracker of a start-up not yet begun (Begin): it
// hears the download of the small files while Resolve runs.
func NewTracker() *Tracker {
	now := time.Now()
	return &Tracker{started: now, phaseAt: now, phase: PhaseLoading, files: map[string]*item{}}
}

// Begin starts tracking src: downloading when files are missing from its
// snapshot, else loading (or ready at once for the mock).
func (t *Tracker) Begin(src Source) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.src, t.phaseAt, t.files, t.dl = src, time.Now(), map[string]*item{}, rate{}
	switch {
	case src.Mode == "mock":
		t.phase = PhaseReady
	case src.Snapshot != nil && len(src.Snapshot.Missing()) > 0:
		t.phase = PhaseDownloading
		for _, f := range src.Snapshot.Missing() {
			t.files[f.Path] = &item{total: f.Size}
		}
	default:
		t.phase = PhaseLoading
	}
}

// SetPhase moves to a phase.
func (t *Tracker) SetPhase(p string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.phase, t.phaseAt = p, time.Now()
}

// Fail ends the start-up with err.
func (t *Tracker) Fail(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.phase, t.phaseAt, t.err = PhaseFailed, time.Now(), err.Error()
}

// FileProgress records a file's bytes on disk (hub.Options.Progress).
func (t *Tracker) FileProgress(path string, done, total int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	it := t.files[path]
	if it == nil {
		it = &item{}
		t.files[path] = it
	}
	it.done, it.total = done, total
	var sum int64
	for _, f := range t.files {
		sum += f.done
	}
	t.dl.add(time.Now(), sum)
}

// SetWorkers gives the source of the workers' load progress.
func (t *Tracker) SetWorkers(f func() []WorkerLoad) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.workers = f
}

// Phase is the current phase.
func (t *Tracker) Phase() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.phase
}

// Transfer is the progress of one phase: bytes done and in all, the rate
// over the last seconds, the time left at that rate, and the parts.
type Transfer struct {
	BytesDone      int64   `json:"bytes_done"`
	BytesTotal     int64   `json:"bytes_total"`
	BytesPerSecond float64 `json:"bytes_per_second"`
	ETASeconds     float64 `json:"eta_seconds,omitempty"`
	Files          []Part  `json:"files,omitempty"`
	Workers        []Part  `json:"workers,omitempty"`
}

// Part is one file or one worker.
type Part struct {
	Name       string `json:"name,omitempty"`
	Rank       *int   `json:"rank,omitempty"`
	State      string `json:"state,omitempty"`
	BytesDone  int64  `json:"bytes_done"`
	BytesTotal int64  `json:"bytes_total"`
}

// Fraction is done/total in [0, 1] (0 when the total is unknown).
func (x *Transfer) Fraction() float64 {
	if x == nil || x.BytesTotal <= 0 {
		return 0
	}
	return min(float64(x.BytesDone)/float64(x.BytesTotal), 1)
}

// Status is /health's "startup" object.
type Status struct {
	Phase          string    `json:"phase"`
	Source         string    `json:"source"`
	Reason         string    `json:"reason"`
	Repo           string    `json:"repo,omitempty"`
	Revision       string    `json:"revision,omitempty"`
	Commit         string    `json:"commit,omitempty"`
	Error          string    `json:"error,omitempty"`
	ElapsedSeconds float64   `json:"elapsed_seconds"`
	Download       *Transfer `json:"download,omitempty"`
	Load           *Transfer `json:"load,omitempty"`
}

// Snapshot returns the status now.
func (t *Tracker) Snapshot() Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := Status{Phase: t.phase, Source: t.src.Kind, Reason: t.src.Reason, Error: t.err,
		ElapsedSeconds: time.Since(t.started).Seconds()}
	if s := t.src.Snapshot; s != nil {
		st.Repo, st.Revision, st.Commit = s.Repo, s.Revision, s.Commit
	}
	if len(t.files) > 0 {
		d := &Transfer{BytesPerSecond: t.dl.perSecond()}
		names := make([]string, 0, len(t.files))
		for n := range t.files {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			f := t.files[n]
			d.BytesDone += f.done
			d.BytesTotal += f.total
			d.Files = append(d.Files, Part{Name: n, BytesDone: f.done, BytesTotal: f.total})
		}
		d.ETASeconds = eta(d)
		st.Download = d
	}
	if t.workers != nil && t.phase == PhaseLoading {
		l := &Transfer{}
		for _, w := range t.workers() {
			rank := w.Rank
			l.Workers = append(l.Workers, Part{Rank: &rank, State: w.State, BytesDone: w.Done, BytesTotal: w.Total})
			l.BytesDone += w.Done
			l.BytesTotal += w.Total
		}
		if t.phase == PhaseLoading {
			t.ld.add(time.Now(), l.BytesDone)
			l.BytesPerSecond = t.ld.perSecond()
			l.ETASeconds = eta(l)
		}
		st.Load = l
	}
	return st
}

func eta(x *Transfer) float64 {
	if x.BytesPerSecond <= 0 || x.BytesTotal <= x.BytesDone {
		return 0
	}
	return float64(x.BytesTotal-x.BytesDone) / x.BytesPerSecond
}

// Status is Snapshot as /health's object (api.Startup).
func (t *Tracker) Status() any { return t.Snapshot() }

// Pending says why requests cannot run yet, "" once the model is ready
// (api.Startup): the phase and how far along it is.
func (t *Tracker) Pending() string {
	st := t.Snapshot()
	switch st.Phase {
	case PhaseReady:
		return ""
	case PhaseFailed:
		return "The model failed to start: " + st.Error
	case PhaseDownloading:
		return fmt.Sprintf("The model is downloading from the Hugging Face Hub: %s; requests are served once it is loaded.", describe(st.Download))
	}
	if st.Load != nil && st.Load.BytesTotal > 0 {
		return fmt.Sprintf("The model is loading on the workers: %s; requests are served once it is loaded.", describe(st.Load))
	}
	return "The model is loading on the workers; requests are served once it is loaded."
}

// describe is "42% (5.80 GB of 13.76 GB), about 1m20s left".
func describe(x *Transfer) string {
	if x == nil || x.BytesTotal <= 0 {
		return "starting"
	}
	s := fmt.Sprintf("%.0f%% (%s of %s)", 100*x.Fraction(), hub.HumanBytes(x.BytesDone), hub.HumanBytes(x.BytesTotal))
	if x.ETASeconds > 0 {
		s += fmt.Sprintf(", about %s left", etaString(x.ETASeconds))
	}
	return s
}

// RetryAfter is how long a client should wait before trying again, in
// seconds: the time left when it is known, bounded to [1, 60].
func (t *Tracker) RetryAfter() int {
	st := t.Snapshot()
	x := st.Download
	if st.Phase == PhaseLoading {
		x = st.Load
	}
	if x == nil || x.ETASeconds <= 0 {
		return 5
	}
	return int(min(max(x.ETASeconds, 1), 60))
}

// etaString is a time left for people: whole seconds, rounded up (a bar
// never says 0s while bytes remain).
func etaString(seconds float64) string {
	return (time.Duration(math.Ceil(seconds)) * time.Second).String()
}
