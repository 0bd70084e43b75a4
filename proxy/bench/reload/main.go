// Command reload is `make bench-reload`: issue #17's figure, hot reloads of a static bootstrap under
// open-loop load at 70% of the proxy's capacity, against the real binaries on loopback.
//
// It starts two `meshproof upstream` instances and the proxy (meshproof-proxy, GOMAXPROCS=1, pinned to
// CPU 1; the upstreams, wrk and `meshproof load` on CPU 0, as `make bench-proxy` pins them), then:
//
//  1. capacity: closed-loop `wrk -t1 -c64` for -capacity-duration, median of 3;
//  2. rounds (-rounds) of three open-loop runs of `meshproof load --rate <share × capacity>
//     --connections 64`, all of the same rate and duration: no reload (the baseline); -reloads
//     reloads, one every -interval, alternating configs A and B (see config.go); the same with every
//     -invalid-every-th reload an invalid bootstrap, which the proxy must refuse. Each reload rewrites
//     the bootstrap (write to a temporary file, rename) and sends SIGHUP, then waits for the proxy's
//     server.config_reload_success or server.config_reload_failed to count it and sends one probe
//     request, which must carry the response header of the configuration expected to be running.
//
// It prints each run's figures and the median [min–max] of the rounds, and exits 1 when a reload run
// had a failed request, a reload's effect was not seen, an invalid bootstrap was applied or the
// listener's socket changed.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

type options struct {
	meshproof, proxy  string
	rounds            int
	reloads           int
	interval          time.Duration
	invalidEvery      int
	share             float64
	capacityDuration  time.Duration
	connections       int
	rate              int
	basePort          int
	loadCPU, proxyCPU string
}

func main() {
	var o options
	flag.StringVar(&o.meshproof, "meshproof", "bin/meshproof", "the meshproof binary (upstream, load)")
	flag.StringVar(&o.proxy, "proxy", "bin/proxy/meshproof-proxy", "the proxy binary under test")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds of (baseline, reloads, reloads with invalid ones)")
	flag.IntVar(&o.reloads, "reloads", 100, "reloads per reload run")
	flag.DurationVar(&o.interval, "interval", 200*time.Millisecond, "time between two reloads")
	flag.IntVar(&o.invalidEvery, "invalid-every", 10, "in the third run of a round, every Nth reload is an invalid bootstrap")
	flag.Float64Var(&o.share, "share", 0.7, "open-loop rate as a share of the measured capacity")
	flag.DurationVar(&o.capacityDuration, "capacity-duration", 10*time.Second, "length of each closed-loop capacity run")
	flag.IntVar(&o.connections, "connections", 64, "connections of wrk and of meshproof load")
	flag.IntVar(&o.rate, "rate", 0, "open-loop rate in req/s (0: -share of the measured capacity)")
	flag.IntVar(&o.basePort, "base-port", 18280, "first of the 6 consecutive loopback ports the bench uses")
	flag.StringVar(&o.loadCPU, "load-cpu", "0", "CPU list (taskset) of the upstreams and the load generators")
	flag.StringVar(&o.proxyCPU, "proxy-cpu", "1", "CPU list (taskset) of the proxy under test")
	flag.Parse()
	if flag.NArg() > 0 || o.rounds < 1 || o.reloads < 1 || o.interval <= 0 || o.invalidEvery < 2 || o.share <= 0 || o.share > 1 {
		fmt.Fprintln(os.Stderr, "usage: reload [-rounds N≥1] [-reloads N≥1] [-interval D>0] [-invalid-every N≥2] [-share 0<S≤1] [-rate R] ...")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ok, err := run(ctx, o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench-reload: %v\n", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}
