//go:build linux && race

package integration_test

// raceEnabled: the test binary (and so the pool under test) is built with
// the race detector, whose runtime grows with every goroutine ever made.
const raceEnabled = true
