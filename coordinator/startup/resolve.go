// Package startup takes the coordinator from its --model setting to a
// ready engine, honestly: Resolve decides, before the HTTP port opens,
// what will serve (a checkpoint directory, a Hugging Face repository from
// the cache or the Hub, dummy weights, or the mock, and why), fetching the
// small files (config.json) so the API knows the model's context length;
// Run then downloads the weights and starts and loads the workers while
// the API already answers, /health showing the phase and the bytes, and
// requests getting 503 with Retry-After until the model is ready.
//
// The rules: a path that does not exist, or a repository the Hub says does
// not exist, is a startup error, never the mock; --mock=auto falls back to
// the mock only for a preset model (20b, 120b) whose weights are neither
// cached nor downloadable (offline, unreachable), and says so; a
// --fallback-model, when given, is served in that case instead.
package startup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.uber.org/zap"

	"github.com/gptoss/server/coordinator/hub"
	"github.com/gptoss/server/shared/model"
)

// Kinds of Source: where the weights come from.
const (
	KindDirectory = "directory" // a checkpoint directory given as --model
	KindHub       = "hub"       // a Hub repository, (partly) downloaded now
	KindCache     = "cache"     // a Hub repository complete in the cache
	KindDummy     = "dummy"     // random weights of the model's shapes
	KindMock      = "mock"      // no weights: the mock engine
)

// Source is what will serve, decided before the port opens.
type Source struct {
	// Mode is "real" or "mock"; Reason says why, for the log and /health.
	Mode, Reason string
	Kind         string
	// Preset is the model as clients name it, with the checkpoint's
	// context length.
	Preset model.Preset
	// Vocab is the checkpoint's vocabulary size.
	Vocab int
	// Dir is what the workers load: the checkpoint directory (the cache's
	// snapshot folder for Hub models), or the preset name for dummy weights.
	Dir string
	// Snapshot is the Hub snapshot (KindHub, KindCache); its Missing files
	// are what Run downloads.
	Snapshot *hub.Snapshot
	// Fallback is set when --fallback-model serves instead of --model.
	Fallback bool
}

// Request is what Resolve decides from: the coordinator's settings.
type Request struct {
	Model, Revision string
	// Mock is "auto", "true" or "false".
	Mock string
	// LoadFormat is "auto" or "dummy".
	LoadFormat string
	// FallbackModel is served when Model's weights cannot be had (a
	// checkpoint directory; "" for none).
	FallbackModel string
	Hub           *hub.Client
	Logger        *zap.Logger
}

// Resolve decides what will serve. It may ask the Hub (a few seconds at
// most when it cannot be reached) and fetch the small files of a Hub
// checkpoint; the weights themselves are Run's.
func Resolve(ctx context.Context, r Request) (Source, error) {
	if r.Logger == nil {
		r.Logger = zap.NewNop()
	}
	name := strings.TrimSpace(r.Model)
	switch {
	case r.Mock == "true":
		p := presetFor(name)
		return Source{Mode: "mock", Kind: KindMock, Reason: "requested with --mock", Preset: p, Vocab: p.VocabSize}, nil
	case r.LoadFormat == "dummy":
		return dummy(name)
	}
	if isDir(name) {
		return directory(name)
	}
	repo := ""
	preset, isPreset := findPreset(name)
	switch {
	case isPreset && preset.HubRepo != "":
		repo = preset.HubRepo
	case isPreset:
		return Source{}, fmt.Errorf("--model %s: %s has no published checkpoint; generate one (make tiny) and pass its directory", name, preset.ID)
	case hub.IsRepoID(name):
		repo = name
	case looksLikePath(name):
		return Source{}, fmt.Errorf("--model %s: no such checkpoint directory", name)
	default:
		return Source{}, fmt.Errorf("--model %q: not a preset (20b, 120b), a Hugging Face repository (org/name) or a checkpoint directory", name)
	}
	src, err := fromHub(ctx, r, repo)
	if err == nil {
		if isPreset {
			src.Preset.Name, src.Preset.ID, src.Preset.HubRepo = preset.Name, preset.ID, preset.HubRepo
		}
		return src, nil
	}
	if !isPreset {
		// A name of both shapes (models/tiny) may have meant a directory.
		err = fmt.Errorf("%w (and there is no directory %s here)", err, name)
	}
	if !hub.Unavailable(err) {
		return Source{}, fmt.Errorf("--model %s: %w", name, err)
	}
	// The weights cannot be had now: the fallback model, or for a preset
	// the mock, or an error.
	switch {
	case r.FallbackModel != "":
		r.Logger.Warn("the model's weights cannot be had: serving the fallback model instead",
			zap.String("model", name), zap.String("fallback", r.FallbackModel), zap.Error(err))
		if !isDir(r.FallbackModel) {
			return Source{}, fmt.Errorf("--model %s: %w; and --fallback-model %s is not a checkpoint directory", name, err, r.FallbackModel)
		}
		src, ferr := directory(r.FallbackModel)
		if ferr != nil {
			return Source{}, fmt.Errorf("--fallback-model: %w", ferr)
		}
		src.Fallback = true
		src.Reason = fmt.Sprintf("FALLBACK: %s cannot be had (%v); serving %s instead", name, err, r.FallbackModel)
		return src, nil
	case r.Mock == "auto" && isPreset:
		return Source{Mode: "mock", Kind: KindMock, Preset: preset, Vocab: preset.VocabSize,
			Reason: fmt.Sprintf("%v (--mock=auto fell back to the mock engine)", err)}, nil
	case r.Mock == "auto":
		return Source{}, fmt.Errorf("--model %s: %w (the mock stands in only for the presets 20b and 120b)", name, err)
	}
	return Source{}, fmt.Errorf("--model %s: %w", name, err)
}

// fromHub resolves a repository and fetches its small files.
func fromHub(ctx context.Context, r Request, repo string) (Source, error) {
	snap, err := r.Hub.Resolve(ctx, repo, r.Revision)
	if err != nil {
		return Source{}, err
	}
	if snap.Remote {
		if err := r.Hub.CheckSpace(snap); err != nil {
			return Source{}, err
		}
		// config.json, the index and the generation defaults: small, and
		// the API needs the context length before it opens.
		var small []hub.File
		for _, f := range snap.Missing() {
			if !strings.HasSuffix(f.Path, ".safetensors") {
				small = append(small, f)
			}
		}
		if err := r.Hub.Download(ctx, snap, small); err != nil {
			return Source{}, err
		}
	}
	cfg, err := model.LoadConfig(snap.Dir)
	if err != nil {
		return Source{}, fmt.Errorf("%s@%s: %w", repo, snap.Commit, err)
	}
	p := presetFor(repo)
	p.ContextLength = cfg.MaxPositions
	src := Source{Mode: "real", Kind: KindCache, Preset: p, Vocab: cfg.Vocab, Dir: snap.Dir, Snapshot: snap}
	where := "the Hugging Face cache"
	if snap.CacheReason != "" {
		where += " (" + snap.CacheReason + ")"
	}
	if missing := snap.Missing(); len(missing) > 0 {
		var n int64
		for _, f := range missing {
			n += f.Size
		}
		src.Kind = KindHub
		where = fmt.Sprintf("%s, downloading %s in %d file(s) from %s", where, hub.HumanBytes(n), len(missing), r.Hub.Env().Endpoint)
	}
	src.Reason = fmt.Sprintf("%s@%s (commit %s) from %s", repo, snap.Revision, snap.Commit[:12], where)
	return src, nil
}

// directory serves a checkpoint directory.
func directory(dir string) (Source, error) {
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		return Source{}, fmt.Errorf("--model %s: %w", dir, err)
	}
	p, err := model.Resolve(dir)
	if err != nil {
		return Source{}, err
	}
	p.ContextLength = cfg.MaxPositions
	return Source{Mode: "real", Kind: KindDirectory, Preset: p, Vocab: cfg.Vocab, Dir: dir,
		Reason: "the checkpoint directory " + dir}, nil
}

// dummy serves random weights of a preset's (or a directory's) shapes.
func dummy(name string) (Source, error) {
	if isDir(name) {
		src, err := directory(name)
		src.Kind, src.Reason = KindDummy, "dummy weights of the shapes of "+name+" (--load-format dummy)"
		return src, err
	}
	p, err := model.Resolve(name)
	if err != nil || p.HubRepo == "" && p.Name != "tiny" {
		return Source{}, fmt.Errorf("--load-format dummy: --model %s: not a preset (20b, 120b, tiny) or a checkpoint directory", name)
	}
	return Source{Mode: "real", Kind: KindDummy, Preset: p, Vocab: p.VocabSize, Dir: p.Name,
		Reason: fmt.Sprintf("dummy weights of %s (--load-format dummy)", p.ID)}, nil
}

// presetFor is the preset a name refers to, or for a repository that is
// none, a model named by its repository id (as vLLM names it).
func presetFor(name string) model.Preset {
	if p, ok := findPreset(name); ok {
		return p
	}
	p := model.Presets["20b"]
	p.Name, p.ID, p.HubRepo = name, name, name
	return p
}

// findPreset finds a preset by short name, public id or repository.
func findPreset(name string) (model.Preset, bool) {
	if p, ok := model.Presets[strings.ToLower(name)]; ok {
		return p, true
	}
	for _, p := range model.Presets {
		if strings.EqualFold(name, p.ID) || p.HubRepo != "" && strings.EqualFold(name, p.HubRepo) {
			return p, true
		}
	}
	return model.Preset{}, false
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// looksLikePath: what a user means as a path, not a repository id.
func looksLikePath(s string) bool {
	return strings.HasPrefix(s, "/") || strings.HasPrefix(s, ".") || strings.HasPrefix(s, "~") ||
		strings.Count(s, "/") > 1 || strings.ContainsRune(s, filepath.Separator) && !hub.IsRepoID(s)
}

// errNotReady is what the executor answers before the engine is attached.
var errNotReady = errors.New("startup: the engine is not ready")
