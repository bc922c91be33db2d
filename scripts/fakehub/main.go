// Command fakehub serves the fake Hugging Face Hub of package
// coordinator/hub/hubtest over loopback, for tests outside Go (the Python
// end-to-end tests point HF_ENDPOINT at it).
//
//	fakehub --repo org/model=DIR [--repo org/other=DIR2] [--private org/other] \
//	        [--token T] [--cut PATH:BYTES:TIMES] [--corrupt PATH:TIMES] \
//	        [--throttle BYTES_PER_SEC] [--tree-page-size N] [--ready-file F]
//
// Each --repo serves the files under DIR (recursively) as the "main" branch
// of a model repository. Once listening it writes, atomically (a temporary
// file renamed, so a reader never sees half of it), to --ready-file:
//
//	{"hub": "http://127.0.0.1:P1", "cdn": "http://127.0.0.1:P2",
//	 "control": "http://127.0.0.1:P3", "repos": {"org/model": "<commit>"}}
//
// It runs until SIGTERM or SIGINT. For tests to look and steer while it
// runs, the Hub listener (and the control listener, which stays up when the
// Hub is taken down) serves:
//
//	GET  /_fake/requests    the recorded requests, counts per "host METHOD /path",
//	                        cdn_auth_seen (a request to the CDN carried Authorization)
//	POST /_fake/reset       forget the recorded requests
//	POST /_fake/down?on=1   refuse connections on the Hub and the CDN (on=0: back)
//	POST /_fake/fault?kind=cut|corrupt|ignore-range|fail|throttle|clear&...
//
// (see hubtest's control.go for the fault parameters). PATH in --cut and
// --corrupt is a path inside the repository, or * for every file.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/gptoss/server/coordinator/hub/hubtest"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "fakehub:", err)
		os.Exit(1)
	}
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// cutFault is a parsed --cut PATH:BYTES:TIMES.
type cutFault struct {
	path         string
	bytes, times int64
}

// corruptFault is a parsed --corrupt PATH:TIMES.
type corruptFault struct {
	path  string
	times int64
}

// splitNums splits "PATH:N1:N2..." from the right, so that a path may
// itself hold colons.
func splitNums(v string, n int) (string, []int64, error) {
	nums := make([]int64, n)
	for i := n - 1; i >= 0; i-- {
		j := strings.LastIndexByte(v, ':')
		if j < 0 {
			return "", nil, fmt.Errorf("%q: want PATH%s", v, strings.Repeat(":N", n))
		}
		x, err := strconv.ParseInt(v[j+1:], 10, 64)
		if err != nil {
			return "", nil, fmt.Errorf("%q: %w", v, err)
		}
		nums[i], v = x, v[:j]
	}
	if v == "" {
		return "", nil, errors.New("empty path (use * for every file)")
	}
	return v, nums, nil
}

type config struct {
	repos    [][2]string // id, dir
	private  map[string]bool
	cuts     []cutFault
	corrupts []corruptFault
	opts     hubtest.Options
	throttle int64
	ready    string
	quiet    bool
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("fakehub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var repos, private, cuts, corrupts multiFlag
	c := &config{private: map[string]bool{}}
	fs.Var(&repos, "repo", "org/name=DIR: serve DIR's files as a model repository (repeatable)")
	fs.Var(&private, "private", "org/name: make that repository need the token (repeatable)")
	fs.Var(&cuts, "cut", "PATH:BYTES:TIMES: drop the connection after BYTES of the first TIMES downloads of PATH (repeatable)")
	fs.Var(&corrupts, "corrupt", "PATH:TIMES: change one byte of the first TIMES downloads of PATH (repeatable)")
	fs.StringVar(&c.opts.Token, "token", "", "the valid access token (empty: any token is valid)")
	fs.StringVar(&c.opts.Host, "host", "127.0.0.1", "address to listen on")
	fs.Int64Var(&c.throttle, "throttle", 0, "limit CDN bodies to this many bytes per second (0: unlimited)")
	fs.Int64Var(&c.opts.LFSThreshold, "lfs-threshold", hubtest.DefaultLFSThreshold, "files over this size are LFS whatever their name")
	fs.IntVar(&c.opts.TreePageSize, "tree-page-size", hubtest.DefaultTreePageSize, "entries per page of the tree API")
	fs.StringVar(&c.ready, "ready-file", "", "write the endpoints and commits as JSON here once listening")
	fs.BoolVar(&c.quiet, "quiet", false, "do not log each request to stderr")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, r := range repos {
		id, dir, ok := strings.Cut(r, "=")
		if !ok || id == "" || dir == "" {
			return nil, fmt.Errorf("--repo %q: want org/name=DIR", r)
		}
		c.repos = append(c.repos, [2]string{id, dir})
	}
	known := map[string]bool{}
	for _, r := range c.repos {
		known[r[0]] = true
	}
	for _, p := range private {
		if !known[p] {
			return nil, fmt.Errorf("--private %s: no --repo %s=DIR", p, p)
		}
		c.private[p] = true
	}
	for _, v := range cuts {
		p, n, err := splitNums(v, 2)
		if err != nil {
			return nil, fmt.Errorf("--cut: %w", err)
		}
		c.cuts = append(c.cuts, cutFault{p, n[0], n[1]})
	}
	for _, v := range corrupts {
		p, n, err := splitNums(v, 1)
		if err != nil {
			return nil, fmt.Errorf("--corrupt: %w", err)
		}
		c.corrupts = append(c.corrupts, corruptFault{p, n[0]})
	}
	if c.throttle < 0 {
		return nil, errors.New("--throttle must be >= 0")
	}
	return c, nil
}

func run(args []string, stderr io.Writer) error {
	c, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	// Catch the signals before anything starts, so a test stopping us at
	// any point gets a clean exit (and closed listeners).
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	logger := log.New(stderr, "fakehub: ", log.Ltime|log.Lmicroseconds)
	c.opts.Control = true
	if !c.quiet {
		c.opts.Logf = logger.Printf
	}
	srv, err := hubtest.Start(c.opts)
	if err != nil {
		return err
	}
	defer func() { _ = srv.Close() }()

	commits := map[string]string{}
	for _, r := range c.repos {
		commit, err := srv.AddRepoDir(r[0], r[1], hubtest.RepoOptions{Private: c.private[r[0]]})
		if err != nil {
			return err
		}
		commits[r[0]] = commit
	}
	for _, f := range c.cuts {
		srv.Cut(f.path, f.bytes, int(f.times))
	}
	for _, f := range c.corrupts {
		srv.Corrupt(f.path, int(f.times))
	}
	srv.SetThrottle(c.throttle)

	info := map[string]any{"hub": srv.URL(), "cdn": srv.CDNURL(), "control": srv.ControlURL(), "repos": commits}
	if c.ready != "" {
		if err := writeReady(c.ready, info); err != nil {
			return err
		}
	}
	logger.Printf("hub %s, cdn %s, control %s, repos %v", srv.URL(), srv.CDNURL(), srv.ControlURL(), commits)
	<-ctx.Done()
	logger.Printf("stopping")
	return nil
}

// writeReady writes the ready file through a temporary file in the same
// directory and a rename, so a reader polling for it sees all or nothing.
func writeReady(path string, info any) error {
	data, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return fmt.Errorf("encode ready file: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".fakehub-ready-*")
	if err != nil {
		return fmt.Errorf("write ready file: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write ready file %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write ready file %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write ready file: %w", err)
	}
	return nil
}
