package startup

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/gptoss/server/coordinator/hub"
)

// Display shows the start-up's progress: on a terminal, progress bars
// (bytes, rate, time left) for the download and for each worker's load,
// redrawn in place below the log; elsewhere (systemd, containers, CI), a
// structured log line every LogEvery. Log output must go through Writer
// so that a bar is cleared before a log line and drawn again after it.
type Display struct {
	t        *Tracker
	log      *zap.Logger
	tty      bool
	every    time.Duration
	mu       sync.Mutex
	out      io.Writer
	drawn    int      // lines of the bar on screen
	lines    []string // what they show
	finished bool
}

// LogEvery is how often progress is logged when stderr is not a terminal.
const LogEvery = 10 * time.Second

// NewDisplay draws t to out (stderr), as bars when tty. log is the
// logger of the non-terminal progress lines: usually one writing through
// the display's Writer, hence set after (SetLogger).
func NewDisplay(t *Tracker, out io.Writer, tty bool) *Display {
	return &Display{t: t, out: out, tty: tty, every: LogEvery}
}

// SetLogger sets the logger of the non-terminal progress lines.
func (d *Display) SetLogger(log *zap.Logger) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.log = log
}

// Writer is where the logger writes: through the display, which keeps its
// bars below the log lines.
func (d *Display) Writer() io.Writer { return displayWriter{d} }

type displayWriter struct{ d *Display }

func (w displayWriter) Write(p []byte) (int, error) {
	d := w.d
	d.mu.Lock()
	defer d.mu.Unlock()
	d.clear()
	n, err := d.out.Write(p)
	d.draw()
	return n, err
}

// Sync lets zap flush through the display.
func (w displayWriter) Sync() error { return nil }

// clear erases the bar (the cursor is below it). Caller holds mu.
func (d *Display) clear() {
	if d.drawn > 0 {
		fmt.Fprintf(d.out, "\x1b[%dA\x1b[J", d.drawn)
		d.drawn = 0
	}
}

// draw prints the bar's lines. Caller holds mu.
func (d *Display) draw() {
	if !d.tty || d.finished {
		return
	}
	for _, l := range d.lines {
		fmt.Fprintf(d.out, "%s\x1b[K\n", l)
	}
	d.drawn = len(d.lines)
}

// Run draws until ctx ends or the start-up is over (ready or failed).
func (d *Display) Run(ctx context.Context) {
	period := 250 * time.Millisecond
	if !d.tty {
		period = d.every
	}
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		st := d.t.Snapshot()
		if st.Phase == PhaseReady || st.Phase == PhaseFailed {
			d.finish()
			return
		}
		if d.tty {
			d.mu.Lock()
			d.clear()
			d.lines = barLines(st, 100)
			d.draw()
			d.mu.Unlock()
		} else {
			d.logLine(st)
		}
		select {
		case <-ctx.Done():
			d.finish()
			return
		case <-tick.C:
		}
	}
}

// finish removes the bar for good.
func (d *Display) finish() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.clear()
	d.finished = true
}

// logLine is the non-terminal form: one structured line per period.
func (d *Display) logLine(st Status) {
	d.mu.Lock()
	log := d.log
	d.mu.Unlock()
	if log == nil {
		return
	}
	x, what := st.Download, "downloading the model"
	if st.Phase == PhaseLoading {
		x, what = st.Load, "loading the model on the workers"
	}
	if x == nil {
		log.Info(what, zap.String("phase", st.Phase), zap.Float64("elapsed_seconds", st.ElapsedSeconds))
		return
	}
	fields := []zap.Field{zap.String("phase", st.Phase), zap.Int64("bytes_done", x.BytesDone), zap.Int64("bytes_total", x.BytesTotal),
		zap.String("percent", fmt.Sprintf("%.1f", 100*x.Fraction())), zap.Float64("bytes_per_second", x.BytesPerSecond),
		zap.Float64("eta_seconds", x.ETASeconds)}
	if st.Phase == PhaseDownloading {
		done := 0
		for _, f := range x.Files {
			if f.BytesDone >= f.BytesTotal {
				done++
			}
		}
		fields = append(fields, zap.String("repo", st.Repo), zap.Int("files_done", done), zap.Int("files", len(x.Files)))
	}
	log.Info(what, fields...)
}

// barLines renders the bars: a total line, then one line per file being
// downloaded (at most four) or per worker loading.
func barLines(st Status, width int) []string {
	var lines []string
	switch st.Phase {
	case PhaseDownloading:
		x := st.Download
		if x == nil {
			return []string{"downloading " + st.Repo + " ..."}
		}
		lines = append(lines, bar(fmt.Sprintf("downloading %s@%s", st.Repo, short(st.Commit)), x, width))
		active := 0
		for _, f := range x.Files {
			if f.BytesDone > 0 && f.BytesDone < f.BytesTotal && active < 4 {
				active++
				lines = append(lines, fmt.Sprintf("  %-44s %s / %s", clip(f.Name, 44), hub.HumanBytes(f.BytesDone), hub.HumanBytes(f.BytesTotal)))
			}
		}
	case PhaseLoading:
		x := st.Load
		if x == nil || x.BytesTotal == 0 {
			return []string{fmt.Sprintf("loading the model on the workers ... %s", time.Duration(st.ElapsedSeconds)*time.Second)}
		}
		lines = append(lines, bar("loading weights", x, width))
		for _, w := range x.Workers {
			p := Transfer{BytesDone: w.BytesDone, BytesTotal: w.BytesTotal}
			lines = append(lines, fmt.Sprintf("  rank %-3d %-9s %5.1f%%  %s / %s", *w.Rank, w.State, 100*p.Fraction(),
				hub.HumanBytes(w.BytesDone), hub.HumanBytes(w.BytesTotal)))
		}
	}
	return lines
}

// bar is "label [=====>     ]  42%  5.80 GB / 13.76 GB  98.3 MB/s  ETA 1m20s".
func bar(label string, x *Transfer, width int) string {
	const cells = 30
	f := x.Fraction()
	full := int(f * cells)
	b := strings.Repeat("=", full)
	if full < cells {
		b += ">" + strings.Repeat(" ", cells-full-1)
	}
	s := fmt.Sprintf("%s [%s] %3.0f%%  %s / %s", label, b, 100*f, hub.HumanBytes(x.BytesDone), hub.HumanBytes(x.BytesTotal))
	if x.BytesPerSecond > 0 {
		s += fmt.Sprintf("  %s/s", hub.HumanBytes(int64(x.BytesPerSecond)))
	}
	if x.ETASeconds > 0 {
		s += "  ETA " + etaString(x.ETASeconds)
	}
	return clip(s, width+len(label))
}

func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	return commit
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}
