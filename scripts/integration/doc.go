// Package integration holds the in-process tests that join the two sides
// of the NATS boundary: the coordinator's scheduler and API driving the
// worker's engine executor (worker/local) directly, with the race detector
// on. They live here because design.md forbids coordinator/ and worker/ to
// import each other, test files included (shared/step's TestLayering holds
// that rule); the same paths over NATS and real processes are covered by
// the worker tests and scripts/e2e.
package integration
