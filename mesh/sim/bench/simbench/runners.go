package main

import (
	"github.com/meshproof/meshproof/mesh/live"
	"github.com/meshproof/meshproof/mesh/plan"
)

// runners are the runners simbench can measure, by the name -runner takes.
//
// The integrator adds "sim": func() plan.Runner { return sim.Runner{} } (package
// github.com/meshproof/meshproof/mesh/sim) once the simulator's runner lands; until then `-runner sim`
// exits 2 saying so, and `make bench-sim` stops there.
var runners = map[string]func() plan.Runner{
	"embedded": func() plan.Runner { return live.Runner{} },
}
