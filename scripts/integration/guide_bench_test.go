package integration

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gptoss/server/coordinator/guide"
	"github.com/gptoss/server/coordinator/sched"
	"github.com/gptoss/server/coordinator/tokenizer"
	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/shared/step"
	"github.com/gptoss/server/worker/engine"
	"github.com/gptoss/server/worker/local"
)

// benchSchema is shaped like what clients send for extraction (a pydantic
// model): nested objects, an array of objects, enums, a nullable field,
// numbers with bounds. benchBounded is the same with the title's length
// bounded (pydantic's constr(max_length=80)), which costs llguidance a
// lexer state per length and character class: the worst case at random
// text, where every state is new.
const benchSchema = `{"type":"object","properties":{
 "title":{"type":"string"},
 "year":{"type":"integer","minimum":1900,"maximum":2100},
 "rating":{"type":"number"},
 "genre":{"enum":["drama","comedy","documentary","thriller"]},
 "cast":{"type":"array","maxItems":8,"items":{"type":"object","properties":{
   "name":{"type":"string"},"role":{"type":"string"},"lead":{"type":"boolean"}},
   "required":["name","role","lead"],"additionalProperties":false}},
 "sequel":{"anyOf":[{"type":"string"},{"type":"null"}]}},
 "required":["title","year","rating","genre","cast","sequel"],"additionalProperties":false}`

// BenchmarkGuidedDecode runs 64 sequences of the tiny model (the full
// 201 088-token vocabulary) through the real scheduler and CPU engine at
// temperature 1, every one constrained to benchSchema from its first
// token, and reports the time the steps waited for their masks against
// the steps' own time, measured in the same run (plain: the same without
// guides). The masks of a step are computed in parallel, so on a 2-core
// machine half the step's sequences share each core.
func BenchmarkGuidedDecode(b *testing.B) {
	c := guide.Shared()
	if err := c.Err(); errors.Is(err, guide.ErrNoLibrary) {
		b.Skip(err)
	}
	b.Run("plain/seqs=64", func(b *testing.B) { benchGuided(b, c, nil, 64, 48) })
	for name, schema := range map[string]string{"schema": benchSchema, "bounded": strings.Replace(benchSchema, `"title":{"type":"string"}`, `"title":{"type":"string","maxLength":80}`, 1)} {
		g, err := guide.JSONSchema([]byte(schema))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name+"/seqs=64", func(b *testing.B) { benchGuided(b, c, g, 64, 48) })
	}
}

func benchGuided(b *testing.B, c *guide.Compiler, g *guide.Grammar, n, maxTokens int) {
	guided := g != nil
	cfg := model.Presets["tiny"].Architecture()
	w := engine.DummyWeights(cfg, 5, 0)
	cache, err := engine.NewKVCache(&w.Config, 1024, 512, 16)
	if err != nil {
		b.Fatal(err)
	}
	m, err := engine.NewModel(w, cache)
	if err != nil {
		b.Fatal(err)
	}
	m.ReuseLogits = true
	exec := local.New(m, &w.Config)
	profs := testProfiles(b)
	p := profs["balanced"]
	var mu sync.Mutex
	var stepTime, maskTime time.Duration
	var steps, masks, tokens int
	s := sched.New(exec, profs, sched.Options{MaxRunning: n,
		OnStep: func(seqs, toks int, took time.Duration) {
			mu.Lock()
			if toks == seqs { // decode steps only
				stepTime += took
				steps++
				tokens += toks
			}
			mu.Unlock()
		},
		OnGuide: func(k int, took time.Duration) {
			mu.Lock()
			maskTime += took
			masks += k
			mu.Unlock()
		}})
	defer s.Close()
	tok := tokenizer.Default()
	prompt := tok.Encode("Extract the film as JSON: Casablanca, 1942, with Humphrey Bogart and Ingrid Bergman.")
	b.ResetTimer()
	for range b.N {
		var wg sync.WaitGroup
		for i := range n {
			req := &sched.Request{Profile: p, Prompt: prompt, MaxTokens: maxTokens, StopTokens: []int{tokenizer.EndOfText},
				Sampling: step.Sampling{Temperature: 1, TopP: 1, Seed: int64(i), HasSeed: true}}
			if guided {
				gd, err := c.New(&guide.Spec{Raw: true, Final: g, Stops: []int{tokenizer.EndOfText}, ReasoningBudget: guide.Unlimited})
				if err != nil {
					b.Fatal(err)
				}
				req.Guide = gd
			}
			st, err := s.Submit(context.Background(), req)
			if err != nil {
				b.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					_, fin, err := st.Recv(context.Background(), nil)
					if err != nil || fin != nil {
						if fin != nil && fin.Err != nil {
							b.Error(fin.Err)
						}
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	b.StopTimer()
	if steps > 0 {
		b.ReportMetric(float64(stepTime.Microseconds())/float64(steps)/1000, "step-ms")
		b.ReportMetric(float64(tokens)/stepTime.Seconds(), "decode-tok/s")
	}
	if guided && steps > 0 {
		b.ReportMetric(float64(maskTime.Microseconds())/float64(steps)/1000, "mask-ms/step")
		b.ReportMetric(100*maskTime.Seconds()/stepTime.Seconds(), "mask-%-of-step")
		b.ReportMetric(float64(maskTime.Microseconds())/float64(max(masks, 1)), "µs/mask")
	}
}
