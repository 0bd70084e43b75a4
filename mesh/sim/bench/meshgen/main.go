// Command meshgen writes the scenario of `make bench-sim` (package treemesh): services in tiers, each
// calling fan-out services of the next tier through its instances' sidecars, e.g.
//
//	go run ./mesh/sim/bench/meshgen -services 1000 -instances 10 -fanout 3 -depth 5 -rate 100 -duration 10m -o mesh.yaml
//
// It prints what the mesh holds as JSON on stdout (or into -summary FILE): services, instances,
// sidecars, edges, tiers, upstream attempts per client request, planned client requests.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/meshproof/meshproof/mesh/sim/bench/treemesh"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	d := treemesh.Defaults()
	fs := flag.NewFlagSet("meshgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&d.Services, "services", d.Services, "services in all, split over the tiers")
	fs.IntVar(&d.Instances, "instances", d.Instances, "instances per service (1..256)")
	fs.IntVar(&d.Fanout, "fanout", d.Fanout, "services of the next tier each non-leaf service calls")
	fs.IntVar(&d.Depth, "depth", d.Depth, "tiers")
	fs.Float64Var(&d.Rate, "rate", d.Rate, "client requests per second")
	fs.DurationVar(&d.Duration, "duration", d.Duration, "load duration (ignored with -requests)")
	fs.IntVar(&d.Requests, "requests", 0, "send exactly this many client requests at -rate (the duration follows)")
	fs.IntVar(&d.UpstreamRequests, "upstream-requests", 0, "send the fewest client requests whose planned upstream attempts reach this many (the duration follows)")
	fs.Uint64Var(&d.Seed, "seed", d.Seed, "seed of the topology, the service times and the scenario")
	fs.BoolVar(&d.Faults, "faults", d.Faults, "add the faulty instances (a few 3% aborts, a slow instance, a bad window)")
	fs.BoolVar(&d.Lognormal, "lognormal", d.Lognormal, "lognormal service times (one latency fault rule per service); false: fixed at the median")
	out := fs.String("o", "", "write the scenario here (required)")
	summary := fs.String("summary", "", "write the summary JSON here instead of stdout")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *out == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "meshgen: want -o FILE and no other argument")
		return 2
	}
	data, sum, err := treemesh.Generate(d)
	if err != nil {
		fmt.Fprintf(stderr, "meshgen: %v\n", err)
		return 2
	}
	if err := os.WriteFile(*out, data, 0o644); err != nil {
		fmt.Fprintf(stderr, "meshgen: %v\n", err)
		return 1
	}
	js, _ := json.MarshalIndent(sum, "", "  ")
	js = append(js, '\n')
	if *summary != "" {
		if err := os.WriteFile(*summary, js, 0o644); err != nil {
			fmt.Fprintf(stderr, "meshgen: %v\n", err)
			return 1
		}
		return 0
	}
	_, _ = stdout.Write(js)
	return 0
}
