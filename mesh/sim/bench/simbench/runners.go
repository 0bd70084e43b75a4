package main

import (
	"github.com/meshproof/meshproof/mesh/live"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/mesh/sim"
)

// runners are the runners simbench can measure, by the name -runner takes.
var runners = map[string]func() plan.Runner{
	"embedded": func() plan.Runner { return live.Runner{} },
	"sim":      func() plan.Runner { return sim.Runner{} },
}
