// Package config reads a program's settings from, in increasing precedence,
// built-in defaults, an optional YAML config file, environment variables and
// command-line flags. A program describes its settings once, as a Table of
// Setting values over its own settings struct, and every setting then has
// one name in every layer: the flag --max-body-bytes is the file key
// max_body_bytes and the environment variable <EnvPrefix>MAX_BODY_BYTES.
// One table instead of a flag, an environment lookup and a file key per
// setting means a setting cannot be added to one layer and forgotten in
// another, and that every layer checks values the same way.
//
// The package is in shared/ because both the coordinator and the worker use
// it, and neither may import the other.
package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Setting binds one name to a field of the settings struct S.
type Setting[S any] struct {
	// Name is the flag name (lower case, words joined by -). The
	// environment variable is EnvPrefix plus Name upper-cased with _ for -,
	// the file key Name with _ for -.
	Name string
	// Aliases are extra environment variable names, full names without the
	// prefix added (legacy or shared spellings such as GPTOSS_NATS_TOKEN).
	// The setting's own variable wins over its aliases, and an earlier
	// alias over a later one: the first one set is used.
	Aliases []string
	Usage   string
	// List marks a setting that collects values: a repeated flag, a
	// comma-separated variable (if Set splits), a YAML sequence. Each layer
	// that sets a list first calls Reset, so a higher layer replaces the
	// list of a lower one instead of extending it. A List needs a Reset.
	List bool
	// Bool makes the flag take no argument: --name means --name=true, as
	// with the flag package's bool flags (--name=false to turn it off).
	Bool bool
	// Set parses v and stores it in s. It must work on a zero S too: flag
	// values are checked as they are parsed, before the layers are applied.
	Set func(s *S, v string) error
	// Reset clears a List's field before a layer sets it.
	Reset func(s *S)
}

// Table is a program's settings and how to read them.
type Table[S any] struct {
	// Program names the program in the usage text and flag errors.
	Program string
	// EnvPrefix prefixes every environment variable name, e.g. "GPTOSS_".
	EnvPrefix string
	Settings  []Setting[S]
	// FileKeyAliases maps extra file keys to the file key they stand for,
	// e.g. "api_keys" to "api_key", so the file may use the plural a list
	// reads best as.
	FileKeyAliases map[string]string
	// ConfigFlag adds the file layer: --config, or <EnvPrefix>CONFIG, names
	// a YAML file. Without it there is no file layer and --config is an
	// unknown flag.
	ConfigFlag bool
}

// EnvName is the environment variable of the setting called name.
func (t *Table[S]) EnvName(name string) string {
	return t.EnvPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// FileKey is the config-file key of the setting called name.
func FileKey(name string) string { return strings.ReplaceAll(name, "-", "_") }

// envNames lists the variables st reads, its own first.
func (t *Table[S]) envNames(st *Setting[S]) []string {
	return append([]string{t.EnvName(st.Name)}, st.Aliases...)
}

// check catches the mistakes a table can have, which are the program's
// bugs, not the user's: they would otherwise show up as a panic in the flag
// package or as a setting silently read from the wrong variable.
func (t *Table[S]) check() error {
	names := map[string]bool{}
	envs := map[string]string{}
	if t.ConfigFlag {
		names["config"] = true
		envs[t.EnvName("config")] = "config"
	}
	for i := range t.Settings {
		st := &t.Settings[i]
		switch {
		case st.Name == "" || strings.ContainsAny(st.Name, "= \t_"):
			return fmt.Errorf("config: table %s: bad setting name %q", t.Program, st.Name)
		case names[st.Name]:
			return fmt.Errorf("config: table %s: setting %q defined twice (or clashes with --config)", t.Program, st.Name)
		case st.Set == nil:
			return fmt.Errorf("config: table %s: setting %q has no Set", t.Program, st.Name)
		case st.List && st.Reset == nil:
			return fmt.Errorf("config: table %s: list setting %q has no Reset", t.Program, st.Name)
		}
		names[st.Name] = true
		for _, e := range t.envNames(st) {
			if other, ok := envs[e]; ok {
				return fmt.Errorf("config: table %s: environment variable %s read by both %q and %q", t.Program, e, other, st.Name)
			}
			envs[e] = st.Name
		}
	}
	for alias, key := range t.FileKeyAliases {
		if names[strings.ReplaceAll(alias, "_", "-")] {
			return fmt.Errorf("config: table %s: file key alias %q is a setting's own key", t.Program, alias)
		}
		if !names[strings.ReplaceAll(key, "_", "-")] || key == "config" {
			return fmt.Errorf("config: table %s: file key alias %q stands for unknown key %q", t.Program, alias, key)
		}
	}
	return nil
}

// rawFlag records a flag's values as given, to apply them as the last layer
// (after the file and the environment, which are read once the flags have
// said where the file is).
type rawFlag[S any] struct {
	st     *Setting[S]
	values []string
}

func (r *rawFlag[S]) String() string { return strings.Join(r.values, ",") }

// Set checks v on a scratch S, so that a bad flag value fails with the flag
// package's message and the usage text, and records it.
func (r *rawFlag[S]) Set(v string) error {
	var scratch S
	if err := r.st.Set(&scratch, v); err != nil {
		return err
	}
	r.values = append(r.values, v)
	return nil
}

func (r *rawFlag[S]) IsBoolFlag() bool { return r.st.Bool }

// Load builds the settings from defaults, the config file (if the table
// has one), the environment and args (without the program name), each
// layer overriding the ones before. getenv reads the environment (os.Getenv
// in main, a map in tests; nil reads nothing); an empty variable counts as
// unset. Usage text and flag errors go to out (nil: os.Stderr). It returns
// the settings and the config file used ("" when none).
//
// -h and --help print the usage and return flag.ErrHelp. Other errors name
// the layer and the setting (for example `config: environment
// GPTOSS_PORT: want an integer, got "x"`) and wrap the setter's error.
// On any error the settings are the zero S.
func (t *Table[S]) Load(args []string, getenv func(string) string, out io.Writer, defaults S) (S, string, error) {
	var zero S
	if err := t.check(); err != nil {
		return zero, "", err
	}
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	if out == nil {
		out = os.Stderr
	}
	fs := flag.NewFlagSet(t.Program, flag.ContinueOnError)
	fs.SetOutput(out)
	var configPath string
	if t.ConfigFlag {
		fs.StringVar(&configPath, "config", "", "YAML config file (keys are the flag names with _ for -) (env "+t.EnvName("config")+")")
	}
	raws := make([]*rawFlag[S], len(t.Settings))
	for i := range t.Settings {
		st := &t.Settings[i]
		raws[i] = &rawFlag[S]{st: st}
		fs.Var(raws[i], st.Name, st.Usage+" (env "+strings.Join(t.envNames(st), " or ")+")")
	}
	fs.Usage = func() {
		file := ""
		if t.ConfigFlag {
			file = " > --config file"
		}
		fmt.Fprintf(out, "Usage: %s [flags]\n\nPrecedence: flags > environment (%s*)%s > defaults.\n\n", t.Program, t.EnvPrefix, file)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return zero, "", err
	}
	if fs.NArg() > 0 {
		return zero, "", fmt.Errorf("config: unexpected argument %q", fs.Arg(0))
	}

	s := defaults
	if t.ConfigFlag {
		if configPath == "" {
			configPath = getenv(t.EnvName("config"))
		}
		if configPath != "" {
			if err := t.applyFile(&s, configPath); err != nil {
				return zero, "", err
			}
		}
	}
	for i := range t.Settings {
		st := &t.Settings[i]
		for _, name := range t.envNames(st) {
			v := getenv(name)
			if v == "" {
				continue
			}
			if st.List {
				st.Reset(&s)
			}
			if err := st.Set(&s, v); err != nil {
				return zero, "", fmt.Errorf("config: environment %s: %w", name, err)
			}
			break
		}
	}
	for _, r := range raws {
		if len(r.values) == 0 {
			continue
		}
		if r.st.List {
			r.st.Reset(&s)
		}
		for _, v := range r.values {
			if err := r.st.Set(&s, v); err != nil {
				return zero, "", fmt.Errorf("config: --%s: %w", r.st.Name, err)
			}
		}
	}
	return s, configPath, nil
}

// applyFile applies a YAML file of key: value pairs. Unknown keys are
// errors, so a misspelt setting is caught at start rather than silently
// ignored.
func (t *Table[S]) applyFile(s *S, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var doc map[string]any
	if err := yaml.NewDecoder(bytes.NewReader(b)).Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config: %s: %w", path, err)
	}
	byKey := map[string]*Setting[S]{}
	for i := range t.Settings {
		byKey[FileKey(t.Settings[i].Name)] = &t.Settings[i]
	}
	for alias, key := range t.FileKeyAliases {
		byKey[alias] = byKey[key]
	}
	// Sorted, so that which error is reported does not depend on map order.
	for _, k := range slices.Sorted(maps.Keys(doc)) {
		st, ok := byKey[k]
		if !ok {
			return fmt.Errorf("config: %s: unknown key %q", path, k)
		}
		vals, err := fileValues(doc[k])
		if err != nil {
			return fmt.Errorf("config: %s: %s: %w", path, k, err)
		}
		if st.List {
			st.Reset(s)
		}
		for _, v := range vals {
			if err := st.Set(s, v); err != nil {
				return fmt.Errorf("config: %s: %s: %w", path, k, err)
			}
		}
	}
	return nil
}

// fileValues turns a YAML value into the strings a flag would have given:
// one for a scalar, one per item for a sequence, none for null.
func fileValues(v any) ([]string, error) {
	scalar := func(x any) (string, error) {
		switch x.(type) {
		case map[string]any, map[any]any, []any:
			return "", errors.New("want a value or a list of values, got a nested mapping or list")
		}
		return fmt.Sprint(x), nil
	}
	switch v := v.(type) {
	case nil:
		return nil, nil
	case []any:
		vals := make([]string, 0, len(v))
		for _, x := range v {
			sv, err := scalar(x)
			if err != nil {
				return nil, err
			}
			vals = append(vals, sv)
		}
		return vals, nil
	default:
		sv, err := scalar(v)
		if err != nil {
			return nil, err
		}
		return []string{sv}, nil
	}
}

// The setter constructors below build a Setting's Set from an accessor of
// the field it sets, e.g. config.Int(func(s *Settings) *int { return &s.Port }).
// Their errors say what was wanted and what came, and leave the layer and
// the setting's name to Load.

// String sets a string field to the value as given.
func String[S any](field func(*S) *string) func(*S, string) error {
	return func(s *S, v string) error { *field(s) = v; return nil }
}

// Strings appends the comma-separated, non-empty, trimmed items of the
// value to a list field; pair it with Clear as the Reset.
func Strings[S any](field func(*S) *[]string) func(*S, string) error {
	return func(s *S, v string) error {
		for _, item := range strings.Split(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				*field(s) = append(*field(s), item)
			}
		}
		return nil
	}
}

// Clear empties a list field: a List setting's Reset.
func Clear[S, E any](field func(*S) *[]E) func(*S) {
	return func(s *S) { *field(s) = nil }
}

// Int sets an int field.
func Int[S any](field func(*S) *int) func(*S, string) error {
	return func(s *S, v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("want an integer, got %q", v)
		}
		*field(s) = n
		return nil
	}
}

// Bool sets a bool field from what strconv.ParseBool takes (true, false,
// 1, 0, t, f). Give the Setting Bool: true so that --name alone means true.
func Bool[S any](field func(*S) *bool) func(*S, string) error {
	return func(s *S, v string) error {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("want true or false, got %q", v)
		}
		*field(s) = b
		return nil
	}
}

// Float sets a float64 field. NaN is refused: no setting means "not a
// number", and it would slip through every range check after.
func Float[S any](field func(*S) *float64) func(*S, string) error {
	return func(s *S, v string) error {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || math.IsNaN(f) {
			return fmt.Errorf("want a number, got %q", v)
		}
		*field(s) = f
		return nil
	}
}

// NonNegativeFloat sets a float64 field that must not be negative (a rate,
// where 0 means no limit).
func NonNegativeFloat[S any](field func(*S) *float64) func(*S, string) error {
	return func(s *S, v string) error {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || !(f >= 0) {
			return fmt.Errorf("want a non-negative number, got %q", v)
		}
		*field(s) = f
		return nil
	}
}

// Duration sets a time.Duration field from what time.ParseDuration takes.
func Duration[S any](field func(*S) *time.Duration) func(*S, string) error {
	return func(s *S, v string) error {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("want a duration such as 30s, got %q", v)
		}
		*field(s) = d
		return nil
	}
}

// Bytes sets an int64 field from a byte size (see ParseBytes).
func Bytes[S any](field func(*S) *int64) func(*S, string) error {
	return func(s *S, v string) error {
		n, err := ParseBytes(v)
		if err != nil {
			return err
		}
		*field(s) = n
		return nil
	}
}

// OneOf sets a string field that takes one of a few values; it panics
// without any, as that is a bug in the table.
func OneOf[S any](field func(*S) *string, allowed ...string) func(*S, string) error {
	if len(allowed) == 0 {
		panic("config: OneOf without allowed values")
	}
	want := strconv.Quote(allowed[0])
	if n := len(allowed); n > 1 {
		want = strings.Join(allowed[:n-1], ", ") + " or " + allowed[n-1]
	}
	return func(s *S, v string) error {
		v = strings.TrimSpace(v)
		if !slices.Contains(allowed, v) {
			return fmt.Errorf("want %s, got %q", want, v)
		}
		*field(s) = v
		return nil
	}
}

// ParseBytes reads a byte count: 1048576, 512KiB, 8MiB, 1GiB (powers of
// 1024), 2KB, 8MB, 1GB (powers of 1000) or 10B. Negative sizes and sizes
// past an int64 are errors.
func ParseBytes(v string) (int64, error) {
	num, mult := strings.TrimSpace(v), int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}} {
		if strings.HasSuffix(num, u.suf) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suf)), u.m
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("want a byte size such as 8MiB, got %q", v)
	}
	return n * mult, nil
}
