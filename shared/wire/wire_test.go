package wire

import (
	"strings"
	"testing"
)

func TestSubjectsNamespaced(t *testing.T) {
	a, _ := NewSubjects("alpha")
	b, _ := NewSubjects("beta")
	if a.Step() == b.Step() || !strings.HasPrefix(a.Load(3), "gptoss.alpha.") || a.Load(3) != "gptoss.alpha.load.3" {
		t.Fatalf("%s %s %s", a.Step(), b.Step(), a.Load(3))
	}
	if a.NCCL(5) != "gptoss.alpha.nccl.5" || a.NCCL(5) == a.NCCL(6) || a.NCCL(5) == a.Collective(5) {
		t.Fatalf("nccl subject %s", a.NCCL(5))
	}
	for _, bad := range []string{"", "a.b", "a b", "a*", "a>"} {
		if _, err := NewSubjects(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestRoundTripAndLimits(t *testing.T) {
	step := &Step{StepId: 7, Seqs: []*SeqStep{{Id: 1, Tokens: []int32{1, 2, 3}, Pos: 0, Sample: true, Sampling: &Sampling{Temperature: 0.7, TopP: 1}}}, Release: []uint64{4}}
	b, err := Marshal(step)
	if err != nil {
		t.Fatal(err)
	}
	var back Step
	if err := Unmarshal(b, &back); err != nil || back.StepId != 7 || len(back.Seqs[0].Tokens) != 3 || back.Seqs[0].Sampling.Temperature != 0.7 {
		t.Fatalf("%v %+v", err, &back)
	}
	big := &Step{Seqs: []*SeqStep{{Tokens: make([]int32, MaxMessage/2)}}}
	for i := range big.Seqs[0].Tokens {
		big.Seqs[0].Tokens[i] = 200000
	}
	if _, err := Marshal(big); err == nil {
		t.Fatal("oversized message accepted")
	}
	if err := Unmarshal([]byte{0xff, 0xff}, &back); err == nil {
		t.Fatal("garbage decoded")
	}
	if err := Unmarshal(make([]byte, MaxMessage+1), &back); err == nil {
		t.Fatal("oversized input decoded")
	}
}
