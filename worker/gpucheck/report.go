package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// Check statuses.
const (
	Pass    = "pass"
	Fail    = "fail"
	Skip    = "skip"    // not run, with the reason in Detail
	Timeout = "timeout" // ran past its own limit: counts as a failure
	Error   = "error"   // could not run (setup failed): counts as a failure
)

// Check is one correctness check's outcome.
type Check struct {
	Group  string     `json:"group"` // op, sampler, e2e, layer20b
	Name   string     `json:"name"`
	Status string     `json:"status"`
	Detail string     `json:"detail,omitempty"`
	Diff   *Diff      `json:"diff,omitempty"`
	Tol    *Tolerance `json:"tolerance,omitempty"`
	// Extra holds check-specific numbers (top-1 agreement, max |Δlogit|,
	// total variation distance …).
	Extra   map[string]float64 `json:"extra,omitempty"`
	Seconds float64            `json:"seconds"`
}

// failed reports whether the check counts against the exit status.
func (c *Check) failed() bool { return c.Status == Fail || c.Status == Timeout || c.Status == Error }

// Machine describes where the check ran.
type Machine struct {
	GPU        string `json:"gpu,omitempty"`
	Capability string `json:"compute_capability,omitempty"`
	SMs        int    `json:"sms,omitempty"`
	MemTotal   int64  `json:"mem_total_bytes,omitempty"`
	MemFree    int64  `json:"mem_free_bytes_at_start,omitempty"`
	Driver     string `json:"driver,omitempty"`
	NvidiaSMI  string `json:"nvidia_smi,omitempty"` // nvidia-smi's query output, verbatim
	Host       string `json:"host,omitempty"`
	CPUs       int    `json:"cpus"`
	GoVersion  string `json:"go_version"`
	Kernels    string `json:"kernels_library,omitempty"`
}

// Report is everything one run found; it is written as gpu-check.json and
// summarised in gpu-check.txt.
type Report struct {
	Started   time.Time            `json:"started"`
	Seconds   float64              `json:"seconds"`
	Commit    string               `json:"commit"`
	Seed      uint64               `json:"seed"`
	Args      []string             `json:"args"`
	Device    string               `json:"device"` // the device under test: "cuda", or "cpu" in self-tests
	Machine   Machine              `json:"machine"`
	Checks    []Check              `json:"checks"`
	Bench     *Bench               `json:"bench,omitempty"`
	Tolerance map[string]Tolerance `json:"tolerances"`
	// Error is a run-level failure (no library, no device, a check that
	// timed out and left the device in an unknown state).
	Error string `json:"error,omitempty"`
	// Pass: every correctness check passed (skips aside) and no Error.
	Pass bool `json:"pass"`

	mu sync.Mutex
}

// add appends a check (safe from the watchdog's goroutine).
func (r *Report) add(c Check) {
	r.mu.Lock()
	r.Checks = append(r.Checks, c)
	r.mu.Unlock()
}

// finish sets Pass and Seconds.
func (r *Report) finish() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Seconds = time.Since(r.Started).Seconds()
	r.Pass = r.Error == ""
	for i := range r.Checks {
		if r.Checks[i].failed() {
			r.Pass = false
		}
	}
}

// Failed counts the checks that count against the exit status.
func (r *Report) Failed() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for i := range r.Checks {
		if r.Checks[i].failed() {
			n++
		}
	}
	return n
}

// write writes gpu-check.json and gpu-check.txt into dir, each through a
// temporary file and a rename, so a run killed mid-write leaves the
// previous complete version (the report is rewritten after every check).
func (r *Report) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	r.mu.Lock()
	js, err := json.MarshalIndent(r, "", "  ")
	r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("report: encode: %w", err)
	}
	var txt bytes.Buffer
	r.table(&txt)
	for _, f := range []struct {
		name string
		data []byte
	}{{"gpu-check.json", append(js, '\n')}, {"gpu-check.txt", txt.Bytes()}} {
		tmp := filepath.Join(dir, "."+f.name+".tmp")
		if err := os.WriteFile(tmp, f.data, 0o644); err != nil {
			return fmt.Errorf("report: %w", err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, f.name)); err != nil {
			return fmt.Errorf("report: %w", err)
		}
	}
	return nil
}

// table writes the human summary: machine, checks, benchmarks.
func (r *Report) table(w io.Writer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := &r.Machine
	fmt.Fprintf(w, "gpu-check  %s  commit %s  seed %d  device %s\n", r.Started.UTC().Format(time.RFC3339), r.Commit, r.Seed, r.Device)
	if m.GPU != "" {
		fmt.Fprintf(w, "GPU %s (sm_%s, %d SMs, %.1f GiB), driver %s\n", m.GPU, m.Capability, m.SMs, float64(m.MemTotal)/(1<<30), orDash(m.Driver))
	}
	fmt.Fprintf(w, "host %s, %d CPUs, %s\n\n", orDash(m.Host), m.CPUs, m.GoVersion)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if len(r.Checks) == 0 {
		fmt.Fprintln(w, "(no checks ran)")
	} else {
		fmt.Fprintln(tw, "group\tcheck\tstatus\trel L2\tmax abs\tmax abs/max|ref|\tmax rel\tsec\tdetail")
	}
	for _, c := range r.Checks {
		rel, abs, absOf, mrel := "-", "-", "-", "-"
		if d := c.Diff; d != nil {
			rel, abs, mrel = fmt.Sprintf("%.2e", d.RelL2), fmt.Sprintf("%.2e", d.MaxAbs), fmt.Sprintf("%.2e", d.MaxRel)
			if d.RefMax > 0 {
				absOf = fmt.Sprintf("%.2e", d.MaxAbs/d.RefMax)
			}
		}
		detail := c.Detail
		for _, k := range tableKeys {
			if v, ok := c.Extra[k]; ok {
				detail = strings.TrimSpace(fmt.Sprintf("%s %s=%.3g", detail, k, v))
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t%s\n", c.Group, c.Name, strings.ToUpper(c.Status), rel, abs, absOf, mrel, c.Seconds, detail)
	}
	tw.Flush()
	if b := r.Bench; b != nil {
		fmt.Fprintln(w)
		b.table(w)
	}
	fmt.Fprintln(w)
	status := "PASS"
	if !r.Pass {
		status = "FAIL"
	}
	failed := 0
	for i := range r.Checks {
		if r.Checks[i].failed() {
			failed++
		}
	}
	fmt.Fprintf(w, "%s: %d checks, %d failed, %.0f s", status, len(r.Checks), failed, r.Seconds)
	if r.Error != "" {
		fmt.Fprintf(w, "; error: %s", r.Error)
	}
	fmt.Fprintln(w)
}

// tableKeys are the Extra numbers the table shows (the JSON has all).
var tableKeys = []string{"med_rel", "med_rel_bound", "p90_kl", "p90_kl_bound", "flips", "flip_bound", "graph_replayed",
	"mismatches", "logprob_mismatches", "tv", "tv_bound", "outside"}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// version is the source revision, set at build time by the Makefile
// (go build -ldflags "-X main.version=..."); without it the Go
// toolchain's VCS stamp is used. The device machine has no .git, so the
// commit must travel inside the binary.
var version = ""

// commit returns the build's source revision.
func commit() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			if len(rev) > 12 {
				rev = rev[:12]
			}
			if dirty {
				rev += "-dirty"
			}
			return rev
		}
	}
	return "unknown"
}

// hostInfo fills the host side of m, and the driver and the card's state
// from nvidia-smi when it is on the PATH (each query bounded to a few
// seconds: a wedged driver must not hang the check; the state query is
// separate so that a field an older nvidia-smi lacks costs only it).
func hostInfo(m *Machine) {
	m.Host, _ = os.Hostname()
	m.CPUs = runtime.NumCPU()
	m.GoVersion = runtime.Version()
	smi := func(query string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "nvidia-smi", "--query-gpu="+query, "--format=csv").Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	base := smi("name,driver_version")
	if lines := strings.Split(base, "\n"); len(lines) >= 2 {
		if f := strings.Split(lines[1], ","); len(f) >= 2 {
			m.GPU, m.Driver = strings.TrimSpace(f[0]), strings.TrimSpace(f[1])
		}
	}
	m.NvidiaSMI = smi("name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm,clocks.mem,power.limit,temperature.gpu,pstate")
	if m.NvidiaSMI == "" {
		m.NvidiaSMI = base
	}
}
