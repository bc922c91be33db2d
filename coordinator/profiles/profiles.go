// Package profiles loads the serving profiles (latency_first, balanced,
// quality_first): per-profile generation defaults and scheduling policy.
// Profiles are data, not code, so operators tune them in
// configs/profiles.yaml without rebuilding.
package profiles

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sort"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/gptoss/server/configs"
)

// Generation holds the defaults applied to a request that does not set them.
type Generation struct {
	ReasoningEffort string `yaml:"reasoning_effort"`
	// MaxTokens, when set (above 0), caps the output budget of a request
	// that sets no max_tokens; by default such a request may use the rest
	// of the context up to MaxTokensCap, as OpenAI and vLLM allow. It used
	// to be the default budget itself (512 to 4096), which cut reasoning
	// answers off before they began; the built-in profiles leave it unset,
	// and an operator's file that still sets it keeps a smaller default.
	MaxTokens int `yaml:"max_tokens"`
	// MaxTokensCap is the largest output budget a request may ask for
	// (400 above it) and the budget of one that asks for none.
	MaxTokensCap int `yaml:"max_tokens_cap"`
	// MaxReasoningTokens, when set (above 0), is the reasoning budget of a
	// request that sets no max_reasoning_tokens: at that many analysis
	// tokens the reasoning is ended and the answer follows
	// (coordinator/guide). Unset: reasoning is bounded by max_tokens alone.
	MaxReasoningTokens int     `yaml:"max_reasoning_tokens"`
	Temperature        float64 `yaml:"temperature"`
	TopP               float64 `yaml:"top_p"`
}

// Scheduling is the policy the scheduler applies to the profile's requests.
type Scheduling struct {
	MaxBatch       int           `yaml:"max_batch"`
	PrefillChunk   int           `yaml:"prefill_chunk"`
	QueueLimit     int           `yaml:"queue_limit"`
	QueueTimeout   time.Duration `yaml:"queue_timeout"`
	RequestTimeout time.Duration `yaml:"request_timeout"`
}

// Profile is one named bundle of defaults and policy.
type Profile struct {
	Name        string     `yaml:"-"`
	Description string     `yaml:"description"`
	Generation  Generation `yaml:"generation"`
	Scheduling  Scheduling `yaml:"scheduling"`
}

// Set is the loaded profiles, keyed by name.
type Set map[string]*Profile

// ErrUnknown is returned by Get for a name that is not a profile.
var ErrUnknown = errors.New("profiles: unknown profile")

// Get returns the named profile.
func (s Set) Get(name string) (*Profile, error) {
	p, ok := s[name]
	if !ok {
		return nil, fmt.Errorf("%w %q (known: %v)", ErrUnknown, name, s.Names())
	}
	return p, nil
}

// Names returns the profile names in a stable order.
func (s Set) Names() []string {
	names := make([]string, 0, len(s))
	for n := range s {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

type file struct {
	Profiles map[string]*Profile `yaml:"profiles"`
}

// Default parses the profiles built into the binary (configs/profiles.yaml).
func Default() (Set, error) { return Parse(configs.Profiles) }

// Load reads a profiles file; an empty path means the built-in defaults.
func Load(path string) (Set, error) {
	if path == "" {
		return Default()
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("profiles: %w", err)
	}
	s, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// Parse decodes and validates a profiles document. Unknown keys are errors:
// a misspelled setting silently left at its default is worse than a refusal
// to start.
func Parse(b []byte) (Set, error) {
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("profiles: parse: %w", err)
	}
	if len(f.Profiles) == 0 {
		return nil, errors.New("profiles: no profiles defined")
	}
	s := Set{}
	for name, p := range f.Profiles {
		if p == nil {
			return nil, fmt.Errorf("profiles: %q is empty", name)
		}
		p.Name = name
		if err := p.validate(); err != nil {
			return nil, fmt.Errorf("profiles: %q: %w", name, err)
		}
		s[name] = p
	}
	return s, nil
}

func (p *Profile) validate() error {
	g, sc := p.Generation, p.Scheduling
	switch g.ReasoningEffort {
	case "low", "medium", "high":
	default:
		return fmt.Errorf("reasoning_effort %q: want low, medium or high", g.ReasoningEffort)
	}
	switch {
	case g.MaxTokensCap < 1:
		return errors.New("max_tokens_cap must be at least 1")
	case g.MaxTokens < 0 || g.MaxTokens > g.MaxTokensCap:
		return fmt.Errorf("max_tokens %d must be within 1..max_tokens_cap (%d), or 0 (unset: the rest of the context up to the cap)", g.MaxTokens, g.MaxTokensCap)
	case g.Temperature < 0 || g.Temperature > 2:
		return fmt.Errorf("temperature %v must be within 0..2", g.Temperature)
	case g.TopP <= 0 || g.TopP > 1:
		return fmt.Errorf("top_p %v must be within (0, 1]", g.TopP)
	case sc.MaxBatch < 1:
		return errors.New("max_batch must be at least 1")
	case sc.PrefillChunk < 1:
		return errors.New("prefill_chunk must be at least 1")
	case sc.QueueLimit < 1:
		// Every request passes through the queue, however briefly.
		return errors.New("queue_limit must be at least 1")
	case sc.QueueTimeout <= 0:
		return errors.New("queue_timeout must be positive")
	case sc.RequestTimeout < 0:
		return errors.New("request_timeout must not be negative")
	}
	return nil
}
