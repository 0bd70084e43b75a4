package mesh_test

import (
	"context"
	"fmt"

	"github.com/meshproof/meshproof/mesh"
)

// A scenario built in code, run on the embedded runner, its checks judged.
func ExampleRun() {
	sc, err := mesh.Spec{
		Name:     "example",
		Seed:     1,
		Services: map[string]mesh.Service{"checkout": {Instances: 2, Response: mesh.Response{Latency: "1ms"}}},
		Proxies:  map[string]mesh.Proxy{"edge": {RoutesTo: "checkout", Route: mesh.Fields{"timeout": "1s"}}},
		Load:     mesh.Load{Target: "edge", Rate: "20/s", Duration: "1s"},
		Checks:   []string{"success_rate == 100%", "requests == 20"},
	}.Build()
	if err != nil {
		fmt.Println(err)
		return
	}
	res, err := mesh.Run(context.Background(), sc, mesh.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("passed:", res.Passed())
	for _, v := range res.Checks() {
		fmt.Println(v.Check, "→", v.Observed)
	}
	// Output:
	// passed: true
	// success_rate == 100% → success_rate = 100% (20/20)
	// requests == 20 → requests = 20
}

// A Spec refused as its file would be: every problem, with the field path.
func ExampleSpec_Build() {
	_, err := mesh.Spec{
		Name:     "broken",
		Services: map[string]mesh.Service{"checkout": {Instances: 2}},
		Proxies:  map[string]mesh.Proxy{"edge": {RoutesTo: "cart"}},
		Load:     mesh.Load{Target: "edge", Rate: "20/s", Duration: "1s"},
	}.Build()
	for _, e := range mesh.Errors(err) {
		fmt.Println(e.Path+":", e.Msg)
	}
	// Output:
	// proxies.edge.routes_to: "cart" is not a service of this scenario (services: checkout)
}
