// Package model names the gpt-oss models this project serves and the facts
// about them that both the coordinator and the workers need before any
// weights are read: the presets the command line refers to (public model
// id, context length, architecture sizes), the architecture of a
// checkpoint as its config.json states it (Config, LoadConfig; HFJSON
// writes one). Getting a checkpoint from the Hugging Face Hub and its
// cache is the coordinator's (coordinator/hub).
package model

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Preset describes one servable model. The numbers come from
// shared/reference/gpt-oss.md §1.1.
type Preset struct {
	// Name is the short name used on the command line: "20b", "120b", "tiny".
	Name string
	// ID is the model id clients send and /v1/models reports.
	ID string
	// HubRepo is the Hugging Face repository holding the checkpoint.
	HubRepo string
	// ContextLength is max_position_embeddings: prompt plus output tokens.
	ContextLength int
	Layers        int
	Experts       int
	HiddenSize    int
	VocabSize     int
}

// Presets lists the built-in models by short name.
var Presets = map[string]Preset{
	"20b": {
		Name: "20b", ID: "gpt-oss-20b", HubRepo: "openai/gpt-oss-20b",
		ContextLength: 131072, Layers: 24, Experts: 32, HiddenSize: 2880, VocabSize: 201088,
	},
	"120b": {
		Name: "120b", ID: "gpt-oss-120b", HubRepo: "openai/gpt-oss-120b",
		ContextLength: 131072, Layers: 36, Experts: 128, HiddenSize: 2880, VocabSize: 201088,
	},
	// tiny keeps the gpt-oss architecture and the full vocabulary at toy
	// sizes, for development and tests on machines without the real weights.
	"tiny": {
		Name: "tiny", ID: "gpt-oss-tiny", HubRepo: "",
		ContextLength: 4096, Layers: 2, Experts: 8, HiddenSize: 64, VocabSize: 201088,
	},
}

// Resolve maps a --model value to a preset. It accepts the short names, the
// public ids ("gpt-oss-20b") and Hugging Face names ("openai/gpt-oss-20b").
// A directory path is returned as a preset named after the directory with
// the 20b context length; the checkpoint's own config.json (LoadConfig)
// gives its real sizes, which the coordinator reads for the context length
// and the worker for the architecture.
func Resolve(name string) (Preset, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	if p, ok := Presets[n]; ok {
		return p, nil
	}
	for _, p := range Presets {
		if n == p.ID || (p.HubRepo != "" && n == p.HubRepo) {
			return p, nil
		}
	}
	if strings.ContainsRune(name, filepath.Separator) || strings.HasPrefix(name, ".") {
		base := filepath.Base(filepath.Clean(name))
		p := Presets["20b"]
		p.Name, p.ID, p.HubRepo = name, base, ""
		return p, nil
	}
	return Preset{}, fmt.Errorf("model: unknown model %q (want 20b, 120b, tiny or a checkpoint directory)", name)
}

// Aliases returns every id a client may send for this model: the public id
// and the Hugging Face repository name.
func (p Preset) Aliases() []string {
	a := []string{p.ID}
	if p.HubRepo != "" {
		a = append(a, p.HubRepo)
	}
	return a
}
