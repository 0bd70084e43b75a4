//go:build race

package live_test

// raceEnabled: the race detector's shadow memory makes RSS follow the goroutines and allocations of the
// run, so the soak reports RSS without bounding it.
const raceEnabled = true
