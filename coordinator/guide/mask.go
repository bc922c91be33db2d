package guide

import "github.com/gptoss/server/coordinator/tokenizer"

// The masks are step.Seq.Allow bitsets: token t is allowed when bit t%32
// of word t/32 is set.

func set(m []uint32, t int)      { m[t/32] |= 1 << (uint(t) % 32) }
func unset(m []uint32, t int)    { m[t/32] &^= 1 << (uint(t) % 32) }
func get(m []uint32, t int) bool { return m[t/32]>>(uint(t)%32)&1 == 1 }

// only allows t alone.
func only(m []uint32, t int) {
	clear(m)
	set(m, t)
}

// text allows every ordinary token and no special one.
func text(m []uint32) {
	full := tokenizer.NumOrdinary / 32
	for i := range full {
		m[i] = ^uint32(0)
	}
	clear(m[full:])
	for t := full * 32; t < tokenizer.NumOrdinary; t++ {
		set(m, t)
	}
}
