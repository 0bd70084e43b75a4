package reports_test

import "github.com/meshproof/meshproof/internal/leakcheck"

// Every spec is checked for goroutines left running after its cleanups. (In its own file: the suite
// file is being changed elsewhere.)
var _ = leakcheck.Goroutines()
