package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/meshproof/meshproof/cmd/internal/cli"
	"github.com/meshproof/meshproof/reports/record"

	"github.com/meshproof/meshproof/mesh/load"
	"github.com/meshproof/meshproof/reports"
)

const loadUsage = `usage: meshproof load URL --rate R --duration D [flags]     open loop (constant, Poisson, phases)
       meshproof load URL --concurrency N --duration D [flags]  closed loop (N workers, like wrk)

  --rate R              open loop: requests/s (uniform arrivals unless --poisson)
  --duration D          run length, e.g. 30s (with --phase: the phases' sum)
  --phase SPEC          a named phase, repeatable, instead of --rate/--duration:
                          NAME:DURATION:RATE          constant, e.g. warmup:5s:100
                          NAME:DURATION:FROM..TO      linear ramp, e.g. ramp:10s:100..1000
                          NAME:DURATION:burst=N/EVERY N requests at once every EVERY, e.g. spike:5s:burst=50/1s
  --poisson             open loop: Poisson arrivals (exponential gaps) of the same mean rate
  --seed S              seed of the Poisson arrivals and of the request mix (default 1)
  --concurrency N       without --rate: closed loop with N workers; with --rate: cap on requests in flight
  --think D             closed loop: pause of each worker between a response and its next request
  --connections C       exactly C connections, opened before the start (default: HTTP/1.1 as needed, h2c 1);
                        with HTTP/1.1 at most C requests are in flight: in open loop, queueing behind them
                        shows as send lag and in the corrected latency
  --h2c                 HTTP/2 over cleartext with prior knowledge
  --grpc METHOD         gRPC calls of meshproof.test.v1.Echo over h2c (as meshproof upstream serves it):
                        unary or server_stream; only status 0 (OK) is a success
  --grpc-deadline D     each gRPC call's deadline, sent as grpc-timeout (default none)
  --method M, -H 'K: V' (repeatable), --body S, --timeout D (default 30s)
  --mix W:METHOD:PATH   weighted request mix entry, repeatable, e.g. --mix 9:GET:/ --mix 1:POST:/orders
  --json                print one JSON object instead of the human summary
  --raw FILE            write one line per request (CSV, or JSON lines when FILE ends in .jsonl)
  --max-error-rate P    exit 1 when more than P% of the requests failed (a transport error or a status
                        outside 2xx/3xx; with --grpc, a grpc-status other than 0); without it, exit 1 only
                        when every request failed

Exit codes: 0 the load ran (and held --max-error-rate), 1 the error threshold failed, every request
failed, or the run was interrupted, 2 invalid flags or URL.
`

// headerFlags collects repeated -H flags.
type headerFlags []string

func (h *headerFlags) String() string     { return strings.Join(*h, ", ") }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }

// cmdLoad drives HTTP load against any endpoint, like vegeta or fortio, and prints the result.
func cmdLoad(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	rateFlag := fs.Float64("rate", 0, "")
	duration := fs.Duration("duration", 0, "")
	poisson := fs.Bool("poisson", false, "")
	seed := fs.Uint64("seed", 1, "")
	concurrency := fs.Int("concurrency", 0, "")
	think := fs.Duration("think", 0, "")
	connections := fs.Int("connections", 0, "")
	h2c := fs.Bool("h2c", false, "")
	grpcMethod := fs.String("grpc", "", "")
	grpcDeadline := fs.Duration("grpc-deadline", 0, "")
	method := fs.String("method", "", "")
	body := fs.String("body", "", "")
	timeout := fs.Duration("timeout", 0, "")
	jsonOut := fs.Bool("json", false, "")
	raw := fs.String("raw", "", "")
	maxErrorRate := fs.Float64("max-error-rate", -1, "")
	var headers, phases, mixes headerFlags
	fs.Var(&headers, "H", "")
	fs.Var(&headers, "header", "")
	fs.Var(&phases, "phase", "")
	fs.Var(&mixes, "mix", "")

	bad := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "meshproof load: "+format+"\n%s", append(a, loadUsage)...)
		return cli.ExitInvalid
	}
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(stdout, loadUsage)
				return cli.ExitOK
			}
			return bad("%v", err)
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(positional) != 1 {
		return bad("want exactly one URL, got %d", len(positional))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	cfg := load.Config{
		URL: positional[0], Method: *method, Rate: *rateFlag, Duration: *duration, Timeout: *timeout,
		Poisson: *poisson, Seed: *seed, Concurrency: *concurrency, Think: *think, Connections: *connections, H2C: *h2c,
	}
	if set["grpc"] {
		cfg.GRPC = &load.GRPC{Method: *grpcMethod, Deadline: *grpcDeadline}
	} else if set["grpc-deadline"] {
		return bad("--grpc-deadline needs --grpc")
	}
	switch {
	case set["rate"] && !(*rateFlag > 0):
		return bad("--rate %g: want requests/s > 0", *rateFlag)
	case set["concurrency"] && *concurrency <= 0:
		return bad("--concurrency %d: want > 0", *concurrency)
	case set["connections"] && *connections <= 0:
		return bad("--connections %d: want > 0", *connections)
	case len(phases) > 0 && (set["rate"] || set["duration"]):
		return bad("--phase replaces --rate and --duration: give one or the other")
	case len(phases) == 0 && !set["rate"] && !set["concurrency"]:
		return bad("want --rate R (open loop), --phase SPEC, or --concurrency N (closed loop)")
	case len(phases) == 0 && !set["duration"]:
		return bad("want --duration D")
	case set["max-error-rate"] && !(*maxErrorRate >= 0 && *maxErrorRate <= 100):
		return bad("--max-error-rate %g: want a percentage from 0 to 100", *maxErrorRate)
	}
	for _, p := range phases {
		ph, err := parsePhase(p)
		if err != nil {
			return bad("--phase %q: %v", p, err)
		}
		cfg.Phases = append(cfg.Phases, ph)
	}
	if len(headers) > 0 {
		cfg.Header = http.Header{}
		for _, h := range headers {
			name, value, ok := strings.Cut(h, ":")
			if !ok || strings.TrimSpace(name) == "" {
				return bad("-H %q: want 'Name: value'", h)
			}
			cfg.Header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
		}
	}
	if set["body"] {
		cfg.Body = []byte(*body)
	}
	for _, m := range mixes {
		r, err := parseMix(m)
		if err != nil {
			return bad("--mix %q: %v", m, err)
		}
		cfg.Mix = append(cfg.Mix, r)
	}

	var rawFile *os.File
	if *raw != "" {
		if strings.HasSuffix(*raw, ".jsonl") {
			cfg.RawFormat = load.RawJSONL
		}
		f, err := os.Create(*raw)
		if err != nil {
			cli.PrintErr(stderr, err)
			return cli.ExitInvalid
		}
		rawFile = f
		cfg.Raw = f
	}
	res, err := load.Generate(ctx, cfg)
	if rawFile != nil {
		if cerr := rawFile.Close(); err == nil && cerr != nil {
			cli.PrintErr(stderr, fmt.Errorf("--raw %s: %w", *raw, cerr))
		}
	}
	if err != nil {
		if rawFile != nil {
			_ = os.Remove(*raw)
		}
		return bad("%v", strings.TrimPrefix(err.Error(), "load: "))
	}
	if res.RawErr != nil {
		cli.PrintErr(stderr, fmt.Errorf("--raw %s: %w", *raw, res.RawErr))
	}

	rep := reports.LoadReport{
		URL: cfg.URL, Closed: res.Closed, Arrivals: "uniform", Protocol: "http/1.1", Concurrency: cfg.Concurrency,
		Connections: cfg.Connections, Opened: res.Connections, Started: res.Start, RawFile: *raw, Hist: res.Hist,
	}
	if cfg.Poisson {
		rep.Arrivals = "poisson"
	}
	if cfg.H2C {
		rep.Protocol = "h2c"
	}
	if cfg.GRPC != nil {
		rep.Protocol = "grpc"
	}
	if *jsonOut {
		err = reports.WriteLoadJSON(stdout, rep)
	} else {
		err = reports.WriteLoadTerminal(stdout, rep)
	}
	if err != nil {
		cli.PrintErr(stderr, err)
		return cli.ExitFailed
	}
	if !res.Hist.RateHeld() {
		fmt.Fprintf(stderr, "meshproof load: RATE NOT HELD: achieved %.1f/s of target %.1f/s, max send lag %s\n",
			res.Hist.AchievedRate(), res.Hist.TargetRate(), res.Hist.MaxSendLag)
	}
	if ctx.Err() != nil {
		return cli.ExitFailed
	}
	return loadVerdict(res.Hist, *maxErrorRate, stderr)
}

// loadVerdict is the exit code of a load that ran: 1 when more than maxErrorRate percent of the
// requests failed (maxErrorRate < 0: when every request failed), else 0.
func loadVerdict(h *record.HistSet, maxErrorRate float64, stderr io.Writer) int {
	if h.Requests == 0 {
		return cli.ExitOK
	}
	failed := 100 * float64(h.Errors()) / float64(h.Requests)
	switch {
	case maxErrorRate >= 0 && failed > maxErrorRate:
		fmt.Fprintf(stderr, "meshproof load: ERROR RATE %.4g%% (%d of %d requests) is above --max-error-rate %g%%\n",
			failed, h.Errors(), h.Requests, maxErrorRate)
		return cli.ExitFailed
	case maxErrorRate < 0 && h.Successes == 0:
		fmt.Fprintf(stderr, "meshproof load: EVERY REQUEST FAILED (%d of %d)\n", h.Errors(), h.Requests)
		return cli.ExitFailed
	}
	return cli.ExitOK
}

// parsePhase parses NAME:DURATION:RATE, NAME:DURATION:FROM..TO or NAME:DURATION:burst=N/EVERY.
func parsePhase(s string) (load.Phase, error) {
	parts := strings.SplitN(s, ":", 3)
	if len(parts) != 3 || parts[0] == "" {
		return load.Phase{}, errors.New("want NAME:DURATION:RATE, NAME:DURATION:FROM..TO or NAME:DURATION:burst=N/EVERY")
	}
	name, spec := parts[0], parts[2]
	d, err := time.ParseDuration(parts[1])
	if err != nil || d <= 0 {
		return load.Phase{}, fmt.Errorf("duration %q: want a positive duration such as 10s", parts[1])
	}
	rateOf := func(v string) (float64, error) {
		r, err := strconv.ParseFloat(strings.TrimSuffix(v, "/s"), 64)
		if err != nil || r < 0 {
			return 0, fmt.Errorf("rate %q: want requests/s ≥ 0", v)
		}
		return r, nil
	}
	switch {
	case strings.HasPrefix(spec, "burst="):
		n, every, ok := strings.Cut(strings.TrimPrefix(spec, "burst="), "/")
		size, err := strconv.Atoi(n)
		if !ok || err != nil || size <= 0 {
			return load.Phase{}, fmt.Errorf("burst %q: want burst=N/EVERY, e.g. burst=50/1s", spec)
		}
		p, err := time.ParseDuration(every)
		if err != nil || p <= 0 {
			return load.Phase{}, fmt.Errorf("burst period %q: want a positive duration", every)
		}
		return load.Bursts(name, d, size, p), nil
	case strings.Contains(spec, ".."):
		from, to, _ := strings.Cut(spec, "..")
		a, err := rateOf(from)
		if err != nil {
			return load.Phase{}, err
		}
		b, err := rateOf(to)
		if err != nil {
			return load.Phase{}, err
		}
		return load.Ramp(name, d, a, b), nil
	}
	r, err := rateOf(spec)
	if err != nil {
		return load.Phase{}, err
	}
	return load.Constant(name, d, r), nil
}

// parseMix parses WEIGHT:METHOD:PATH.
func parseMix(s string) (load.Request, error) {
	parts := strings.SplitN(s, ":", 3)
	if len(parts) != 3 {
		return load.Request{}, errors.New("want WEIGHT:METHOD:PATH, e.g. 9:GET:/")
	}
	w, err := strconv.Atoi(parts[0])
	if err != nil || w <= 0 {
		return load.Request{}, fmt.Errorf("weight %q: want an integer > 0", parts[0])
	}
	return load.Request{Weight: w, Method: parts[1], Path: parts[2]}, nil
}
