//go:build race

package main

// raceEnabled skips the numeric tests that build full-size layers under
// the race detector, which slows the CPU reference about tenfold; the
// harness's concurrency (phases, timeouts, the report) is still raced by
// the others.
const raceEnabled = true
