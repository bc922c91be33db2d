package sample

// maskAVX2 is maskLogits over words whole words (32 tokens each) of src
// and allow, into dst: a blend per eight tokens, whatever the bits.
//
//go:noescape
func maskAVX2(dst, src *float32, allow *uint32, words int)
