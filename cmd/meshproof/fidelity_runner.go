package main

import (
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/mesh/sim"
)

// fidelitySimRunner makes the simulator's runner (mesh/sim) for `meshproof fidelity` and its specs.
var fidelitySimRunner = func() plan.Runner { return sim.Runner{} }
