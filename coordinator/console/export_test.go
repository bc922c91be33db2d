package console

import (
	"maps"
	"slices"
)

// Assets lists the served files' names.
func Assets() []string { return slices.Sorted(maps.Keys(files)) }
