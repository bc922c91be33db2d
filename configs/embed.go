// Package configs carries the default configuration files into the binaries,
// so that a coordinator started from any directory has its profiles. An
// operator overrides them with --profiles-file; the files in this folder stay
// the documented source of the defaults.
package configs

import _ "embed"

// Profiles is configs/profiles.yaml as built into the binary.
//
//go:embed profiles.yaml
var Profiles []byte
