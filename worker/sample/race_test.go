//go:build race

package sample

// raceEnabled shortens the statistical tests under the race detector, which
// slows the sampler about tenfold; the plain run keeps their full power.
const raceEnabled = true
