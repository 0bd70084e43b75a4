package main

import "github.com/meshproof/meshproof/mesh/plan"

// fidelitySimRunner makes the simulator's runner (mesh/sim, Name "sim") for `meshproof fidelity` and
// its specs; while it is nil, fidelity says that the sim runner is not available (exit 2) and the
// fidelity specs over the examples are skipped.
//
// Set to sim.Runner{} when mesh/sim's runner lands:
//
//	var fidelitySimRunner = func() plan.Runner { return sim.Runner{} }
var fidelitySimRunner func() plan.Runner = nil
