package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"go.uber.org/zap"

	"github.com/gptoss/server/coordinator/hub"
	"github.com/gptoss/server/coordinator/startup"
	"github.com/gptoss/server/shared/logging"
	"github.com/gptoss/server/shared/model"
)

// download is the `coordinator download MODEL` subcommand: it fetches what
// serving MODEL needs into the Hugging Face cache, with the same progress
// display as the server, prints the snapshot directory on stdout and
// serves nothing. The exit status is 0 on success, 1 on failure, 2 on bad
// usage.
func download(args []string, getenv func(string) string) int {
	fs := flag.NewFlagSet("coordinator download", flag.ContinueOnError)
	revision := fs.String("revision", "main", "branch, tag or commit")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	parallel := fs.Int("parallel", 4, "files downloaded at once")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: coordinator download [--revision REV] MODEL

Downloads MODEL (20b, 120b, or a Hugging Face repository org/name) into the
Hugging Face cache (HF_HUB_CACHE, HF_HOME; HF_ENDPOINT, HF_TOKEN honoured),
only the files serving needs, verified, and prints the snapshot directory.`)
		fs.PrintDefaults()
	}
	// Flags may come after the model too.
	var model string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		if model != "" {
			fmt.Fprintf(os.Stderr, "coordinator download: one model at a time (got %q and %q)\n", model, fs.Arg(0))
			return 2
		}
		model, rest = fs.Arg(0), fs.Args()[1:]
	}
	if model == "" {
		fs.Usage()
		return 2
	}
	repo, err := repoOf(model)
	if err != nil {
		fmt.Fprintln(os.Stderr, "coordinator download:", err)
		return 2
	}
	tracker := startup.NewTracker()
	tty := logging.StderrIsTerminal()
	disp := startup.NewDisplay(tracker, os.Stderr, tty)
	log, err := logging.NewTo(*logLevel, "auto", disp.Writer(), tty)
	if err != nil {
		fmt.Fprintln(os.Stderr, "coordinator download:", err)
		return 2
	}
	defer func() { _ = log.Sync() }()
	disp.SetLogger(log.Named("download"))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	env := hub.EnvFrom(getenv)
	hc := hub.New(env, hub.Options{Logger: log.Named("hub"), UserAgent: "gptoss-server/" + version, Parallel: *parallel,
		Progress: tracker.FileProgress})
	snap, err := hc.Resolve(ctx, repo, *revision)
	if err != nil {
		log.Error("download failed", zap.Error(err))
		return 1
	}
	missing := snap.Missing()
	if len(missing) == 0 {
		log.Info("already in the cache", zap.String("repo", repo), zap.String("commit", snap.Commit), zap.String("dir", snap.Dir))
		fmt.Println(snap.Dir)
		return 0
	}
	var total int64
	for _, f := range missing {
		total += f.Size
	}
	log.Info("downloading", zap.String("repo", repo), zap.String("revision", *revision), zap.String("commit", snap.Commit),
		zap.Int("files", len(missing)), zap.String("size", hub.HumanBytes(total)), zap.String("cache", env.Cache))
	tracker.Begin(startup.Source{Mode: "real", Kind: startup.KindHub, Snapshot: snap})
	dctx, dcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { disp.Run(dctx); close(done) }()
	err = hc.Download(ctx, snap, nil)
	dcancel()
	<-done
	if err != nil {
		log.Error("download failed", zap.Error(err))
		return 1
	}
	log.Info("downloaded", zap.String("repo", repo), zap.String("dir", snap.Dir))
	fmt.Println(snap.Dir)
	return 0
}

// repoOf maps a preset name or id to its repository; a repository id is
// itself.
func repoOf(name string) (string, error) {
	if p, err := model.Resolve(name); err == nil && p.HubRepo != "" {
		return p.HubRepo, nil
	}
	if hub.IsRepoID(name) {
		return name, nil
	}
	return "", fmt.Errorf("%q is not a preset with a published checkpoint (20b, 120b) or a repository id (org/name)", strings.TrimSpace(name))
}
