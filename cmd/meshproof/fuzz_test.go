package main

import (
	"bytes"
	"context"
	"math"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/meshproof/meshproof/cmd/internal/cli"
)

// FuzzLoadFlags fuzzes `meshproof load`'s command line: its flags, --phase and --mix specs and the URL,
// run through cmdLoad with a context already cancelled, so that an accepted command sends nothing and
// returns at once (exit 1: interrupted). Properties:
//   - no panic, and within a second;
//   - exit 0 only for --help, 2 (invalid flags or URL) with a "meshproof load: " message and the usage,
//     1 only for a command that validated: then the URL is an absolute http(s) URL with a host, and
//     every --phase and --mix given parses on its own (parsePhase, parseMix) to a phase with a positive
//     duration and finite, non-negative rates, or to a mix entry of positive weight.
//
// The arguments are the input's lines; --raw (which would create files) is left out.
func FuzzLoadFlags(f *testing.F) {
	for _, s := range []string{
		"http://127.0.0.1:1/\n--rate\n100\n--duration\n1s",
		"http://127.0.0.1:1/\n--phase\nwarmup:5s:100\n--phase\nramp:10s:100..1000\n--phase\nspike:5s:burst=50/1s",
		"http://127.0.0.1:1/\n--concurrency\n4\n--duration\n1s\n--think\n1ms",
		"http://127.0.0.1:1/\n--rate\n10\n--duration\n1s\n--mix\n9:GET:/\n--mix\n1:POST:/orders\n-H\nX-A: 1",
		"http://127.0.0.1:1/\n--rate\n10\n--duration\n1s\n--h2c\n--connections\n2\n--poisson\n--seed\n7",
		"http://127.0.0.1:1/\n--rate\n10\n--duration\n1s\n--max-error-rate\n5\n--json\n--timeout\n1s\n--method\nHEAD",
		"--help", "ftp://x/\n--rate\n1\n--duration\n1s", "http://\n--rate\n1\n--duration\n1s",
		"http://127.0.0.1:1/\n--phase\na:1s:NaN", "http://127.0.0.1:1/\n--phase\na:1s:1e308..1e308",
		"http://127.0.0.1:1/\n--rate\n1e308\n--duration\n100h",
	} {
		f.Add(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f.Fuzz(func(t *testing.T, in string) {
		args := strings.Split(in, "\n")
		for _, a := range args {
			if strings.Contains(a, "raw") {
				return
			}
		}
		var stdout, stderr bytes.Buffer
		start := time.Now()
		code := cmdLoad(ctx, args, &stdout, &stderr)
		if d := time.Since(start); d > time.Second {
			t.Fatalf("load %q took %s with a cancelled context", args, d)
		}
		switch code {
		case cli.ExitOK:
			if !strings.Contains(in, "-h") {
				t.Fatalf("load %q exits 0 without --help; stderr %q", args, stderr.String())
			}
		case cli.ExitInvalid:
			if !strings.HasPrefix(stderr.String(), "meshproof load: ") || !strings.Contains(stderr.String(), "usage: meshproof load") {
				t.Fatalf("load %q exits 2 with %q", args, stderr.String())
			}
		case cli.ExitFailed:
			checkAccepted(t, args)
		default:
			t.Fatalf("load %q exits %d", args, code)
		}
	})
}

// checkAccepted checks the URL and the phase and mix specs of a command cmdLoad accepted.
func checkAccepted(t *testing.T, args []string) {
	t.Helper()
	for i := 0; i+1 < len(args); i++ {
		switch strings.TrimLeft(args[i], "-") {
		case "phase":
			p, err := parsePhase(args[i+1])
			bad := func(r float64) bool { return math.IsNaN(r) || math.IsInf(r, 0) || r < 0 }
			if err != nil || p.Duration <= 0 || bad(p.Rate) || bad(p.RampTo) {
				t.Fatalf("load %q accepted --phase %q = %+v, %v", args, args[i+1], p, err)
			}
		case "mix":
			m, err := parseMix(args[i+1])
			if err != nil || m.Weight <= 0 {
				t.Fatalf("load %q accepted --mix %q = %+v, %v", args, args[i+1], m, err)
			}
		}
	}
	for _, a := range args {
		if strings.HasPrefix(a, "-") || !strings.Contains(a, "://") {
			continue
		}
		if u, err := url.Parse(a); err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" {
			return
		}
	}
	t.Fatalf("load %q accepted with no absolute http(s) URL among its arguments", args)
}
