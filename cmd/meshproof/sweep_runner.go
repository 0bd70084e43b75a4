package main

import (
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/mesh/sim"
)

// sweepRunner makes the runner of each run of `meshproof sweep` (one per run: runs go in parallel): the
// simulator, which runs a point in a fraction of its load's duration, deterministically for the seed.
// Specs swap in fakes.
var sweepRunner = func() plan.Runner { return sim.Runner{} }
