package main

import (
	"github.com/meshproof/meshproof/mesh/live"
	"github.com/meshproof/meshproof/mesh/plan"
)

// sweepRunner makes the runner of each run of `meshproof sweep` (one per run: runs go in parallel).
// Replaced by sim.Runner{} when mesh/sim's runner lands: the virtual-time runner runs a point in a
// fraction of its load's duration, deterministically for the seed; the embedded runner takes the load's
// real duration and its latencies depend on the machine.
var sweepRunner func() plan.Runner = func() plan.Runner { return live.Runner{} }
