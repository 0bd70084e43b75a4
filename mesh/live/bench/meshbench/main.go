// Command meshbench measures how large a call graph the embedded runner holds on this machine: chains
// of services (each tier calling the next through its instances' sidecars) at a fixed client rate, each
// run's success rate, achieved rate and latency percentiles, and the p99 each hop adds over the
// one-service baseline. It is `make bench-mesh`; nothing in it is a pass/fail test.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshproof/meshproof/mesh/live"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/reports/record"
	"github.com/meshproof/meshproof/scenarios"
)

func main() {
	rate := flag.Int("rate", 500, "client requests per second")
	dur := flag.Duration("duration", 30*time.Second, "load duration of each run")
	depths := flag.String("depths", "1,2,4,6,8", "chain lengths (services) to run")
	instances := flag.Int("instances", 2, "instances per service")
	flag.Parse()

	fmt.Printf("chains of services, %d instances each (each calling instance with its sidecar), %d req/s for %s, on the embedded runner\n", *instances, *rate, *dur)
	fmt.Printf("%-8s %-10s %-9s %-9s %-10s %-10s %-10s %s\n", "services", "processes", "success", "achieved", "p50", "p99", "max", "p99 added per hop")
	var base time.Duration
	for _, f := range strings.Split(*depths, ",") {
		d, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || d < 1 {
			fmt.Fprintf(os.Stderr, "meshbench: -depths %q: want positive integers\n", *depths)
			os.Exit(2)
		}
		sc, err := scenarios.Parse([]byte(chain(d, *instances, *rate, *dur)), fmt.Sprintf("chain-%d.yaml", d))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		rec, err := live.Run(context.Background(), sc, nil, plan.Options{})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		ok, lat := 0, make([]time.Duration, 0, len(rec.Samples))
		for _, s := range rec.Samples {
			if s.OK() {
				ok++
			}
			lat = append(lat, s.Latency)
		}
		slices.Sort(lat)
		p := record.SortedPercentiles(lat)
		p50, p99, maxL := p.P50, p.P99, p.Max
		if d == 1 {
			base = p99
		}
		perHop := "-"
		if d > 1 && base > 0 {
			perHop = ((p99 - base) / time.Duration(d-1)).Round(10 * time.Microsecond).String()
		}
		// components: the ingress proxy, every instance, and a sidecar per calling instance
		components := 1 + d**instances + (d-1)**instances
		fmt.Printf("%-8d %-10d %-9s %-9s %-10s %-10s %-10s %s\n", d, components,
			fmt.Sprintf("%.2f%%", 100*float64(ok)/float64(len(rec.Samples))),
			fmt.Sprintf("%.0f/s", float64(len(rec.Samples))/dur.Seconds()),
			p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond), maxL.Round(10*time.Microsecond), perHop)
	}
}

// chain is a scenario of d services s0 → s1 → … → s(d-1), the load through an ingress proxy to s0.
func chain(d, instances, rate int, dur time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "name: chain-%d\nservices:\n", d)
	for i := range d {
		fmt.Fprintf(&b, "  s%d:\n    instances: %d\n", i, instances)
		if i+1 < d {
			fmt.Fprintf(&b, "    calls: [s%d]\n", i+1)
		}
	}
	fmt.Fprintf(&b, "proxies:\n  edge: {routes_to: s0}\nload: {target: edge, rate: %d/s, duration: %s}\n", rate, dur)
	return b.String()
}
