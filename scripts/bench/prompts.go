package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
)

// words are common lowercase English words that o200k (gpt-oss's
// tokenizer) encodes as one token each, both at the start of a text and
// after a space (TestWordsAreSingleTokens checks this against the
// project's tokenizer). A prompt of n of them, space-separated, is
// therefore n tokens long: the length is exact for the text itself, and
// only the chat template around it adds tokens.
var words = strings.Fields(`
the of and to in is that for it as with was on be by at this are from or
have an they which one you were all we her she there would their will when
who him been has more if no out do so can what up said about other into than
its time only could new them man some these then two first may any like now
my such make over our even most me state after also made many did must
before back see through way where get much go well your know should down
work year because come people just each those how too little good world very
still own long here between both life being under never day same another
while last might us great old off since against came right used take three
house use during without again place around however home small found thought
went say part once general high upon school every does got left number
course war until always away something fact though water less public put
think almost hand far head yet government system better set nothing night
end why called find going look asked later point next program city business
give group young let room side social given present order national possible
rather second face per among form important often things looking early white
case large big need four within felt along children best church ever least
power development light thing family interest want members mind country area
others although turned done open service certain kind problem different door
thus help sense means whole matter perhaps times law human line above name
example company`)

// message is one chat message as the OpenAI API spells it.
type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// conversation is one entry of a mix: a chat (messages) or a plain prompt,
// with its sampling weight and, optionally, its own max_tokens.
type conversation struct {
	Name      string    `json:"name,omitempty"`
	Weight    float64   `json:"weight,omitempty"`
	Prompt    string    `json:"prompt,omitempty"`
	Messages  []message `json:"messages,omitempty"`
	MaxTokens int       `json:"max_tokens,omitempty"`
}

// request is what one bench request sends: either a prompt or messages
// (the endpoint decides which form goes on the wire).
type request struct {
	prompt    string
	messages  []message
	maxTokens int // 0: the global --max-tokens
}

// workload picks the body of each request. Every choice comes from a
// random stream derived from the seed and the request's position (sweep
// point, client, index), never from a shared generator, so a run's prompts
// are the same whatever order the goroutines happen to run in.
type workload struct {
	seed          uint64
	inputLen      int // > 0: random prompts of this many words (tokens)
	inputLenRange int // lengths uniform in [inputLen-r, inputLen+r]
	convs         []conversation
	cum           []float64 // cumulative weights of convs
}

// newWorkload builds the workload the flags ask for: the legacy fixed
// prompt, random prompts of a given length, or a mix ("chat" or a JSONL
// file).
func newWorkload(seed uint64, inputLen, inputLenRange int, mix string) (*workload, error) {
	w := &workload{seed: seed, inputLen: inputLen, inputLenRange: inputLenRange}
	if inputLen < 0 || inputLenRange < 0 {
		return nil, errors.New("--input-len and --input-len-range must not be negative")
	}
	if inputLenRange > 0 && inputLen == 0 {
		return nil, errors.New("--input-len-range needs --input-len")
	}
	if inputLenRange >= inputLen && inputLen > 0 {
		return nil, fmt.Errorf("--input-len-range %d must be smaller than --input-len %d", inputLenRange, inputLen)
	}
	if mix == "" {
		return w, nil
	}
	if inputLen > 0 {
		return nil, errors.New("--input-len and --mix are exclusive: a mix brings its own prompts")
	}
	var convs []conversation
	if mix == "chat" {
		convs = chatMix
	} else {
		var err error
		if convs, err = readMix(mix); err != nil {
			return nil, err
		}
	}
	w.convs = convs
	total := 0.0
	for _, c := range convs {
		total += c.Weight
		w.cum = append(w.cum, total)
	}
	return w, nil
}

// stream is the seed of the random stream for one request, built from its
// position: the sweep point (20 bits), the client (20 bits; rateClient in
// rate mode) and the request's index (24 bits). Distinct positions never
// share a stream, and each sweep point gets its own random prompts, so a
// server's prefix cache cannot carry one point's prompts into the next.
func stream(point, client, index int) uint64 {
	return uint64(point)<<44 | uint64(client)<<24 | uint64(index)
}

// rateClient is the client field of stream in rate mode, where requests
// belong to no client; it is above any concurrency level used in practice.
const rateClient = 1<<20 - 1

// request returns the body for the request at stream s; label names it in
// the legacy fixed prompt.
func (w *workload) request(s uint64, label string) request {
	rng := rand.New(rand.NewPCG(w.seed, s))
	switch {
	case w.inputLen > 0:
		n := w.inputLen
		if w.inputLenRange > 0 {
			n += rng.IntN(2*w.inputLenRange+1) - w.inputLenRange
		}
		return request{prompt: randomText(rng, n)}
	case len(w.convs) > 0:
		c := w.convs[w.pick(rng.Float64())]
		return request{prompt: c.Prompt, messages: c.Messages, maxTokens: c.MaxTokens}
	default:
		return request{prompt: label + ": tell me something"}
	}
}

// pick returns the index of the conversation that u (uniform in [0, 1))
// falls on, by weight.
func (w *workload) pick(u float64) int {
	x := u * w.cum[len(w.cum)-1]
	for i, c := range w.cum {
		if x < c {
			return i
		}
	}
	return len(w.cum) - 1
}

// randomText is n words from the list, space-separated: n tokens.
func randomText(rng *rand.Rand, n int) string {
	var b strings.Builder
	b.Grow(n * 7)
	for i := range max(n, 1) {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(words[rng.IntN(len(words))])
	}
	return b.String()
}

// flatten renders a conversation as one prompt for /v1/completions, which
// takes text rather than messages.
func flatten(msgs []message) string {
	var b strings.Builder
	for _, m := range msgs {
		role := m.Role
		if role != "" {
			role = strings.ToUpper(role[:1]) + role[1:]
		}
		fmt.Fprintf(&b, "%s: %s\n\n", role, m.Content)
	}
	b.WriteString("Assistant:")
	return b.String()
}

// readMix reads a mix from a JSONL file: one conversation per line, either
// {"prompt": "..."} or {"messages": [{"role": ..., "content": ...}, ...]},
// with an optional "weight" (default 1), "max_tokens" and "name". Blank
// lines and lines starting with # are skipped.
func readMix(path string) ([]conversation, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--mix: %w", err)
	}
	defer f.Close()
	var convs []conversation
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var c conversation
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			return nil, fmt.Errorf("--mix %s line %d: %w", path, n, err)
		}
		switch {
		case c.Prompt == "" && len(c.Messages) == 0:
			return nil, fmt.Errorf("--mix %s line %d: needs \"prompt\" or \"messages\"", path, n)
		case c.Prompt != "" && len(c.Messages) > 0:
			return nil, fmt.Errorf("--mix %s line %d: has both \"prompt\" and \"messages\"", path, n)
		case c.Weight < 0 || c.MaxTokens < 0:
			return nil, fmt.Errorf("--mix %s line %d: negative weight or max_tokens", path, n)
		}
		for i, m := range c.Messages {
			if m.Role == "" {
				return nil, fmt.Errorf("--mix %s line %d: message %d has no role", path, n, i)
			}
		}
		if c.Weight == 0 {
			c.Weight = 1
		}
		convs = append(convs, c)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("--mix %s: %w", path, err)
	}
	if len(convs) == 0 {
		return nil, fmt.Errorf("--mix %s: no prompts", path)
	}
	return convs, nil
}
