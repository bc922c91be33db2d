package tokenizer

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

type goldenCase struct {
	Text string `json:"text"`
	IDs  []int  `json:"ids"`
}

var (
	goldenOnce  sync.Once
	goldenCases []goldenCase
	goldenErr   error
)

// golden returns the cases written by scripts/golden_tokenizer.py from
// Python tiktoken's o200k_base.
func golden(tb testing.TB) []goldenCase {
	tb.Helper()
	goldenOnce.Do(func() {
		data, err := os.ReadFile("testdata/tiktoken_golden.json")
		if err != nil {
			goldenErr = err
			return
		}
		goldenErr = json.Unmarshal(data, &goldenCases)
	})
	if goldenErr != nil {
		tb.Fatalf("loading golden cases: %v", goldenErr)
	}
	if len(goldenCases) < 40 {
		tb.Fatalf("only %d golden cases", len(goldenCases))
	}
	return goldenCases
}

// byteToken returns the id of the single-byte token b.
func byteToken(tb testing.TB, b byte) int {
	tb.Helper()
	id, ok := Default().ranks[string([]byte{b})]
	if !ok {
		tb.Fatalf("no token for byte %#02x", b)
	}
	return int(id)
}

// stream feeds ids through a new Decoder and returns every Add output plus
// the final Flush.
func stream(tb testing.TB, tok *Tokenizer, ids []int) []string {
	tb.Helper()
	d := tok.NewDecoder()
	var outs []string
	for _, id := range ids {
		s, err := d.Add(id)
		if err != nil {
			tb.Fatalf("Add(%d): %v", id, err)
		}
		outs = append(outs, s)
	}
	return append(outs, d.Flush())
}

func TestGolden(t *testing.T) {
	tok := Default()
	for _, c := range golden(t) {
		got := tok.Encode(c.Text)
		if !slices.Equal(got, c.IDs) {
			t.Errorf("Encode(%q)\n got %v\nwant %v", c.Text, got, c.IDs)
			continue
		}
		if n := tok.Count(c.Text); n != len(c.IDs) {
			t.Errorf("Count(%q) = %d, want %d", c.Text, n, len(c.IDs))
		}
		text, err := tok.Decode(c.IDs)
		if err != nil || text != c.Text {
			t.Errorf("Decode(%v) = %q, %v; want %q", c.IDs, text, err, c.Text)
		}
	}
}

func TestKnownIDs(t *testing.T) {
	tok := Default()
	for word, want := range map[string]int{"analysis": 35644, "final": 17196, "assistant": 173781} {
		if got := tok.Encode(word); !slices.Equal(got, []int{want}) {
			t.Errorf("Encode(%q) = %v, want [%d]", word, got, want)
		}
		if b, err := tok.TokenBytes(want); err != nil || string(b) != word {
			t.Errorf("TokenBytes(%d) = %q, %v; want %q", want, b, err, word)
		}
	}
}

func TestSpecialTokens(t *testing.T) {
	tok := Default()
	named := map[int]string{
		StartOfText: "<|startoftext|>",
		EndOfText:   "<|endoftext|>",
		200000:      "<|reserved_200000|>",
		200001:      "<|reserved_200001|>",
		Return:      "<|return|>",
		Constrain:   "<|constrain|>",
		200004:      "<|reserved_200004|>",
		Channel:     "<|channel|>",
		Start:       "<|start|>",
		End:         "<|end|>",
		Message:     "<|message|>",
		200009:      "<|reserved_200009|>",
		200010:      "<|reserved_200010|>",
		200011:      "<|reserved_200011|>",
		Call:        "<|call|>",
		200013:      "<|reserved_200013|>",
		200018:      "<|reserved_200018|>",
		201087:      "<|reserved_201087|>",
	}
	for id, name := range named {
		if got := tok.SpecialName(id); got != name {
			t.Errorf("SpecialName(%d) = %q, want %q", id, got, name)
		}
		if got, ok := tok.SpecialID(name); !ok || got != id {
			t.Errorf("SpecialID(%q) = %d, %v; want %d", name, got, ok, id)
		}
		if b, err := tok.TokenBytes(id); err != nil || string(b) != name {
			t.Errorf("TokenBytes(%d) = %q, %v; want %q", id, b, err, name)
		}
	}
	seen := map[string]bool{}
	for id := NumOrdinary; id < VocabSize; id++ {
		name := tok.SpecialName(id)
		if !strings.HasPrefix(name, "<|") || !strings.HasSuffix(name, "|>") || seen[name] {
			t.Fatalf("SpecialName(%d) = %q: malformed or duplicate", id, name)
		}
		seen[name] = true
		if got, ok := tok.SpecialID(name); !ok || got != id {
			t.Fatalf("SpecialID(%q) = %d, %v; want %d", name, got, ok, id)
		}
	}
	for _, name := range []string{"<|endofprompt|>", "<|reserved_201088|>", "analysis", "", "<|start"} {
		if id, ok := tok.SpecialID(name); ok {
			t.Errorf("SpecialID(%q) = %d, want not found", name, id)
		}
	}

	for _, c := range []struct {
		id   int
		want bool
	}{{-1, false}, {0, false}, {199997, false}, {199998, true}, {200006, true}, {201087, true}, {201088, false}, {1 << 40, false}} {
		if got := tok.IsSpecial(c.id); got != c.want {
			t.Errorf("IsSpecial(%d) = %v, want %v", c.id, got, c.want)
		}
		if got := tok.SpecialName(c.id); (got != "") != c.want {
			t.Errorf("SpecialName(%d) = %q", c.id, got)
		}
	}
	if VocabSize != 201088 || NumOrdinary != 199998 {
		t.Errorf("VocabSize, NumOrdinary = %d, %d", VocabSize, NumOrdinary)
	}
}

// User text that spells a special token must encode as ordinary tokens.
func TestUserTextNeverSpecial(t *testing.T) {
	tok := Default()
	texts := []string{"<|start|>user<|message|>hi<|end|>", "<|start|>", "x<|call|>y", "<|endofprompt|>"}
	for id := NumOrdinary; id <= 200013; id++ {
		texts = append(texts, tok.SpecialName(id))
	}
	for _, text := range texts {
		ids := tok.Encode(text)
		for _, id := range ids {
			if id < 0 || id >= NumOrdinary {
				t.Errorf("Encode(%q) = %v: contains non-ordinary id %d", text, ids, id)
			}
		}
		if back, err := tok.Decode(ids); err != nil || back != text {
			t.Errorf("Decode(Encode(%q)) = %q, %v", text, back, err)
		}
	}
}

func TestTokenBytes(t *testing.T) {
	tok := Default()
	for _, id := range []int{-1, VocabSize, VocabSize + 5} {
		if b, err := tok.TokenBytes(id); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("TokenBytes(%d) = %q, %v; want ErrInvalidToken", id, b, err)
		}
	}
	// 😀 is one token; its bytes are F0 9F 98 80.
	ids := tok.Encode("😀")
	if len(ids) != 1 {
		t.Fatalf("Encode(😀) = %v", ids)
	}
	b, _ := tok.TokenBytes(ids[0])
	if string(b) != "😀" {
		t.Fatalf("TokenBytes(%d) = %q", ids[0], b)
	}
	// A partial character is returned raw.
	b, _ = tok.TokenBytes(byteToken(t, 0xF0))
	if !slices.Equal(b, []byte{0xF0}) {
		t.Errorf("TokenBytes(byte F0) = %x", b)
	}
	// The result is a copy: scribbling on it changes nothing.
	b, _ = tok.TokenBytes(35644)
	b[0] = 'X'
	if s, _ := tok.Decode([]int{35644}); s != "analysis" {
		t.Errorf("TokenBytes result aliases the table: Decode = %q", s)
	}
	// Every ordinary token is non-empty.
	for id := range NumOrdinary {
		if tok.off[id+1] <= tok.off[id] {
			t.Fatalf("token %d is empty", id)
		}
	}
}

func TestTokenText(t *testing.T) {
	tok := Default()
	if got := tok.TokenText(35644); got != "analysis" {
		t.Errorf("TokenText(35644) = %q", got)
	}
	if got := tok.TokenText(byteToken(t, 0xF0)); got != "\uFFFD" {
		t.Errorf("TokenText(byte F0) = %q, want U+FFFD", got)
	}
	if got := tok.TokenText(Return); got != "<|return|>" {
		t.Errorf("TokenText(Return) = %q", got)
	}
	for _, id := range []int{-1, VocabSize} {
		if got := tok.TokenText(id); got != "" {
			t.Errorf("TokenText(%d) = %q, want empty", id, got)
		}
	}
}

func TestDecode(t *testing.T) {
	tok := Default()
	user := tok.Encode("user")
	ids := append(append([]int{Start}, user...), Message)
	ids = append(ids, tok.Encode("hi 😀")...)
	ids = append(ids, End)
	if got, err := tok.Decode(ids); err != nil || got != "<|start|>user<|message|>hi 😀<|end|>" {
		t.Errorf("Decode = %q, %v", got, err)
	}
	if got, err := tok.Decode(nil); err != nil || got != "" {
		t.Errorf("Decode(nil) = %q, %v", got, err)
	}
	for _, bad := range [][]int{{-1}, {1, VocabSize}} {
		if _, err := tok.Decode(bad); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("Decode(%v) error = %v, want ErrInvalidToken", bad, err)
		}
	}
	// A character cut off by the end, or by a special token, is U+FFFD.
	f0, x9f := byteToken(t, 0xF0), byteToken(t, 0x9F)
	if got, _ := tok.Decode([]int{f0, x9f}); got != "\uFFFD" {
		t.Errorf("Decode(F0 9F) = %q", got)
	}
	if got, _ := tok.Decode([]int{f0, x9f, Return}); got != "\uFFFD<|return|>" {
		t.Errorf("Decode(F0 9F <|return|>) = %q", got)
	}
}

func TestDecoderGolden(t *testing.T) {
	tok := Default()
	heldBack := 0
	for _, c := range golden(t) {
		outs := stream(t, tok, c.IDs)
		if got := strings.Join(outs, ""); got != c.Text {
			t.Errorf("streamed %q = %q", c.Text, got)
		}
		if last := outs[len(outs)-1]; last != "" {
			t.Errorf("streaming %q: Flush = %q, want \"\"", c.Text, last)
		}
		for i, s := range outs {
			if !utf8.ValidString(s) {
				t.Errorf("streaming %q: output %d %q is not valid UTF-8", c.Text, i, s)
			}
			if strings.ContainsRune(s, utf8.RuneError) && !strings.ContainsRune(c.Text, utf8.RuneError) {
				t.Errorf("streaming %q: output %d %q contains U+FFFD", c.Text, i, s)
			}
			if s == "" && i < len(c.IDs) {
				heldBack++
			}
		}
	}
	if heldBack == 0 {
		t.Error("no golden case splits a character across tokens; the hold-back path is untested")
	}
}

func TestDecoderSplitEmoji(t *testing.T) {
	tok := Default()
	// 😀 = F0 9F 98 80, fed one byte token at a time.
	var ids []int
	for _, b := range []byte("a😀b") {
		ids = append(ids, byteToken(t, b))
	}
	want := []string{"a", "", "", "", "😀", "b", ""}
	if got := stream(t, tok, ids); !slices.Equal(got, want) {
		t.Errorf("streamed = %q, want %q", got, want)
	}
	// Split 2+2: still nothing until the last byte.
	d := tok.NewDecoder()
	for i, b := range []byte("😀") {
		s, _ := d.Add(byteToken(t, b))
		if i < 3 && s != "" || i == 3 && s != "😀" {
			t.Errorf("byte %d: Add = %q", i, s)
		}
	}
}

func TestDecoderInvalid(t *testing.T) {
	tok := Default()
	bt := func(bs ...byte) []int {
		var ids []int
		for _, b := range bs {
			ids = append(ids, byteToken(t, b))
		}
		return ids
	}
	for _, c := range []struct {
		name string
		ids  []int
		want []string // Add outputs, then Flush
	}{
		{"unfinished then ASCII", bt(0xF0, 0x9F, 'A'), []string{"", "", "\uFFFDA", ""}},
		{"lone continuation", bt(0x80, 'x'), []string{"\uFFFD", "x", ""}},
		{"invalid lead", bt(0xC0, 0xFF), []string{"\uFFFD", "\uFFFD", ""}},
		{"surrogate", bt(0xED, 0xA0, 0x80), []string{"", "\uFFFD\uFFFD", "\uFFFD", ""}},
		{"unfinished at end", bt(0xE2, 0x82), []string{"", "", "\uFFFD"}},
		{"unfinished before special", append(bt(0xE2, 0x82), End, byteToken(t, 'z')), []string{"", "", "\uFFFD", "z", ""}},
		{"broken then whole", bt(0xE2, 0xE2, 0x82, 0xAC), []string{"", "\uFFFD", "", "€", ""}},
	} {
		got := stream(t, tok, c.ids)
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: streamed %q, want %q", c.name, got, c.want)
		}
		// Without specials, the concatenation equals Decode.
		if !slices.ContainsFunc(c.ids, tok.IsSpecial) {
			if dec, _ := tok.Decode(c.ids); dec != strings.Join(got, "") {
				t.Errorf("%s: Decode = %q, streamed %q", c.name, dec, strings.Join(got, ""))
			}
		}
	}

	d := tok.NewDecoder()
	d.Add(byteToken(t, 0xF0))
	for _, id := range []int{-1, VocabSize} {
		if _, err := d.Add(id); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("Add(%d) error = %v, want ErrInvalidToken", id, err)
		}
	}
	if s, _ := d.Add(byteToken(t, 0x9F)); s != "" {
		t.Errorf("after a rejected id the held bytes were lost: Add = %q", s)
	}
	if s, _ := d.Add(tok.Encode("😀")[0]); s != "\uFFFD😀" {
		t.Errorf("Add = %q, want %q", s, "\uFFFD😀")
	}
}

func TestEncodeInvalidUTF8(t *testing.T) {
	tok := Default()
	for _, c := range []struct{ in, want string }{
		{"a\xffb", "a\uFFFDb"},
		{"\xe2\x82", "\uFFFD"},                 // one maximal subpart, one U+FFFD
		{"\xe2\x82x", "\uFFFDx"},               // likewise
		{"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"}, // surrogate: three
		{"\xc0\xaf", "\uFFFD\uFFFD"},           // overlong: two
		{"\xf4\x90\x80\x80", "\uFFFD\uFFFD\uFFFD\uFFFD"},
		{"\xf0\x9f\x98", "\uFFFD"},
		{"ok", "ok"},
	} {
		if got := toValidUTF8(c.in); got != c.want {
			t.Errorf("toValidUTF8(%q) = %q, want %q", c.in, got, c.want)
		}
		ids := tok.Encode(c.in)
		if want := tok.Encode(c.want); !slices.Equal(ids, want) {
			t.Errorf("Encode(%q) = %v, want %v", c.in, ids, want)
		}
		if n := tok.Count(c.in); n != len(ids) {
			t.Errorf("Count(%q) = %d, want %d", c.in, n, len(ids))
		}
	}
}

// The two merge loops must agree, including on pieces long enough that
// Encode uses mergeHeap and on pieces with many equal-rank candidates.
func TestMergeHeapMatchesScan(t *testing.T) {
	tok := Default()
	rng := rand.New(rand.NewPCG(1, 2))
	alphabets := []string{"ab", "a b", "aeiou nrst", "0123456789", " \n", "=-", "한국어", "😀👍🏽"}
	var pieces []string
	for _, c := range golden(t) {
		pieces = append(pieces, c.Text)
	}
	for range 400 {
		alpha := []rune(alphabets[rng.IntN(len(alphabets))])
		var sb strings.Builder
		for range 1 + rng.IntN(150) {
			sb.WriteRune(alpha[rng.IntN(len(alpha))])
		}
		pieces = append(pieces, sb.String())
	}
	for _, p := range pieces {
		if p == "" {
			continue
		}
		scan, heap := tok.mergeScan(nil, p), tok.mergeHeap(nil, p)
		if !slices.Equal(scan, heap) {
			t.Fatalf("piece %q: mergeScan %v, mergeHeap %v", p, scan, heap)
		}
	}
}

// tiktoken-go's generated regex splits " \n \n" wrongly and in quadratic
// time; ours must be right and fast on long runs.
func TestLongRuns(t *testing.T) {
	tok := Default()
	start := time.Now()
	ids := tok.Encode(strings.Repeat(" \n", 40000) + "x")
	want := append(slices.Repeat([]int{56319}, 20000), tok.Encode("x")...) // " \n \n" ×20000
	if !slices.Equal(ids, want) {
		t.Errorf("Encode(\" \\n\"×40000 + x): got %d ids, want %d", len(ids), len(want))
	}
	for _, s := range []string{strings.Repeat(" ", 200000) + "a", strings.Repeat("a", 100000), strings.Repeat("\n", 100000)} {
		text, err := tok.Decode(tok.Encode(s))
		if err != nil || text != s {
			t.Errorf("round trip of a %d-byte run failed", len(s))
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("long runs took %v", d)
	}
}

func TestConcurrent(t *testing.T) {
	tok := Default()
	cases := golden(t)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := g; i < len(cases); i += 4 {
				c := cases[i]
				if got := tok.Encode(c.Text); !slices.Equal(got, c.IDs) {
					t.Errorf("concurrent Encode(%q) = %v", c.Text, got)
				}
				if got, _ := tok.Decode(c.IDs); got != c.Text {
					t.Errorf("concurrent Decode = %q", got)
				}
			}
		})
	}
	wg.Wait()
}

func TestNew(t *testing.T) {
	a, err := New()
	if err != nil {
		t.Fatal(err)
	}
	if a == Default() || Default() != Default() {
		t.Error("New must build a fresh Tokenizer and Default must share one")
	}
	if got := a.Encode("hello world"); !slices.Equal(got, Default().Encode("hello world")) {
		t.Errorf("two tokenizers disagree: %v", got)
	}
}

// checkRoundTrip checks Encode, Decode, Count and streaming for any text.
func checkRoundTrip(t *testing.T, tok *Tokenizer, text string) {
	ids := tok.Encode(text)
	want := toValidUTF8(text)
	got, err := tok.Decode(ids)
	if err != nil || got != want {
		t.Fatalf("Decode(Encode(%q)) = %q, %v", text, got, err)
	}
	if n := tok.Count(text); n != len(ids) {
		t.Fatalf("Count(%q) = %d, len(Encode) = %d", text, n, len(ids))
	}
	outs := stream(t, tok, ids)
	for _, s := range outs {
		if !utf8.ValidString(s) {
			t.Fatalf("streaming %q produced invalid UTF-8 %q", text, s)
		}
	}
	if s := strings.Join(outs, ""); s != got {
		t.Fatalf("streaming %q = %q, Decode = %q", text, s, got)
	}
}

func FuzzEncodeDecode(f *testing.F) {
	for _, c := range golden(f) {
		f.Add(c.Text)
	}
	f.Add("a\xffb\xe2\x82")
	tok := Default()
	f.Fuzz(func(t *testing.T, text string) {
		checkRoundTrip(t, tok, text)
	})
}

// FuzzDecoder checks, for arbitrary id sequences (which need not form valid
// UTF-8), that streaming gives valid UTF-8 equal to Decode of each run of
// ordinary ids between specials.
func FuzzDecoder(f *testing.F) {
	f.Add([]byte{0xF0, 0x00, 0x9F, 0x00, 0x98, 0x00})
	f.Add([]byte{0x01, 0x02, 0xFF, 0xFF, 0x03})
	tok := Default()
	f.Fuzz(func(t *testing.T, data []byte) {
		// Each pair of bytes is one id: mostly single-byte tokens (which
		// split characters), some arbitrary ordinary ids, some specials.
		var ids []int
		for i := 0; i+1 < len(data); i += 2 {
			switch v := int(data[i])<<8 | int(data[i+1]); {
			case v < 0xE000:
				ids = append(ids, byteToken(t, data[i]))
			case v < 0xFF00:
				ids = append(ids, (v*7919)%NumOrdinary)
			default:
				ids = append(ids, NumOrdinary+int(data[i+1])%16)
			}
		}
		var want strings.Builder
		runStart := 0
		for i := 0; i <= len(ids); i++ {
			if i == len(ids) || tok.IsSpecial(ids[i]) {
				s, err := tok.Decode(ids[runStart:i])
				if err != nil {
					t.Fatal(err)
				}
				want.WriteString(s)
				runStart = i + 1
			}
		}
		outs := stream(t, tok, ids)
		for _, s := range outs {
			if !utf8.ValidString(s) {
				t.Fatalf("Add returned invalid UTF-8 %q", s)
			}
		}
		if got := strings.Join(outs, ""); got != want.String() {
			t.Fatalf("streamed %q, Decode %q", got, want.String())
		}
	})
}

// benchText is about 10 KB of ordinary English prose.
var benchText = strings.Repeat(`The committee met on Tuesday to review the proposal. After a long discussion, `+
	`members agreed that the budget, which had grown by 12% since last year, needed a closer look. `+
	`"We can't keep spending like this," said the chair, "but we'll find a way." `+
	"Several people suggested postponing the decision until the auditors' report arrives in March.\n\n", 27)

func BenchmarkEncode(b *testing.B) {
	tok := Default()
	b.SetBytes(int64(len(benchText)))
	b.ReportAllocs()
	for b.Loop() {
		tok.Encode(benchText)
	}
}

func BenchmarkCount(b *testing.B) {
	tok := Default()
	b.SetBytes(int64(len(benchText)))
	b.ReportAllocs()
	for b.Loop() {
		tok.Count(benchText)
	}
}

func BenchmarkDecoder(b *testing.B) {
	tok := Default()
	ids := tok.Encode(benchText + "한국어 텍스트와 이모지 😀👍🏽")
	b.ReportAllocs()
	for b.Loop() {
		d := tok.NewDecoder()
		for _, id := range ids {
			d.Add(id)
		}
		d.Flush()
	}
}

func BenchmarkNew(b *testing.B) {
	for b.Loop() {
		if _, err := New(); err != nil {
			b.Fatal(err)
		}
	}
}

// Every byte has its own ordinary token, which decodes to that byte.
func TestByteToken(t *testing.T) {
	tok := Default()
	for b := range 256 {
		id, ok := tok.ByteToken(byte(b))
		if !ok {
			t.Fatalf("no token for byte %#x", b)
		}
		if got, _ := tok.TokenBytes(id); len(got) != 1 || got[0] != byte(b) {
			t.Fatalf("byte %#x: token %d is %q", b, id, got)
		}
	}
}
