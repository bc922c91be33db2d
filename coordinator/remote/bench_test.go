package remote

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/gptoss/server/shared/step"
	"github.com/gptoss/server/shared/testkit"
	"github.com/gptoss/server/shared/wire"
)

// BenchmarkDispatch measures the NATS dispatch overhead of one step: the
// coordinator broadcasts it to every rank, rank 0 answers at once (no
// model), the coordinator decodes the reply. The batch is 1 or 64 decoding
// sequences, the world 1, 2 or 4 ranks, each on its own connection as
// separate processes would be.
func BenchmarkDispatch(b *testing.B) {
	for _, world := range []int{1, 2, 4} {
		for _, batch := range []int{1, 64} {
			b.Run(fmt.Sprintf("tp%d/batch%d", world, batch), func(b *testing.B) {
				srv := testkit.NATS(b)
				subj, _ := wire.NewSubjects("bench")
				connect := func() *nats.Conn {
					nc, err := nats.Connect(srv.ClientURL(), nats.Token(srv.Token()))
					if err != nil {
						b.Fatal(err)
					}
					return nc
				}
				for rank := range world {
					nc := connect()
					defer nc.Close()
					_, err := nc.Subscribe(subj.Step(), func(m *nats.Msg) {
						var s wire.Step
						if wire.Unmarshal(m.Data, &s) != nil || rank != 0 {
							return
						}
						res := &wire.StepResult{StepId: s.StepId}
						for _, q := range s.Seqs {
							res.Tokens = append(res.Tokens, &wire.SampledToken{SeqId: q.Id, Token: q.Tokens[0] + 1})
						}
						data, _ := wire.Marshal(res)
						_ = m.Respond(data)
					})
					if err != nil {
						b.Fatal(err)
					}
					_ = nc.Flush()
				}
				nc := connect()
				defer nc.Close()
				c, err := New(Options{Conn: nc, Subjects: subj, WorldSize: world, StepTimeout: 5 * time.Second, Logger: zap.NewNop()})
				if err != nil {
					b.Fatal(err)
				}
				defer c.Shutdown()
				bt := &step.Batch{}
				for i := range batch {
					bt.Seqs = append(bt.Seqs, step.Seq{ID: uint64(i + 1), Tokens: []int{100 + i}, Pos: 50, Sample: true, Sampling: &step.Sampling{TopP: 1}})
				}
				ctx := context.Background()
				b.ResetTimer()
				for b.Loop() {
					if err := c.Step(ctx, bt); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/step")
			})
		}
	}
}
