// Command tinymodel writes the deterministic tiny gpt-oss checkpoint: the
// gpt-oss architecture (YaRN RoPE, sinks, sliding window on even layers,
// MXFP4 experts) at toy sizes with the full 201088-token vocabulary, in the
// Hugging Face layout, so the server can run a real model on any machine.
//
//	go run ./scripts/tinymodel -out models/tiny
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/worker/engine"
)

func main() {
	out := flag.String("out", "models/tiny", "directory to write config.json and model.safetensors into")
	seed := flag.Uint64("seed", 1, "random seed (the same seed writes the same bytes)")
	preset := flag.String("preset", "tiny", "architecture preset: tiny, or 20b/120b for full-size dummy weights (large)")
	flag.Parse()
	p, err := model.Resolve(*preset)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tinymodel:", err)
		os.Exit(2)
	}
	w := engine.DummyWeights(p.Architecture(), *seed, 0)
	if err := engine.WriteCheckpoint(*out, w); err != nil {
		fmt.Fprintln(os.Stderr, "tinymodel:", err)
		os.Exit(1)
	}
	fmt.Printf("wrote %s (%s architecture, seed %d)\n", *out, p.Name, *seed)
}
