//go:build !race

package gpucheck

const raceEnabled = false
