package docker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/meshproof/meshproof/reports/record"

	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/meshproof/meshproof/scenarios"
)

// Kinds of ContainerFault.
const (
	FaultKill      = "kill"      // SIGKILL; started again after For (0: stays down for the rest of the run)
	FaultPause     = "pause"     // frozen (TCP handshakes still complete, nothing answers); unpaused after For
	FaultPartition = "partition" // disconnected from the run network; reconnected, same address and aliases, after For
	FaultRestart   = "restart"   // stopped (SIGTERM, then SIGKILL after 1s), started again after For (0: at once)
)

// Event kinds a container fault records in record.FaultEvent.Kind: the fault's kind when applied, then
// "start" (kill, restart), "unpause" (pause) or "heal" (partition) when it is lifted, or "error" when
// Docker refused it.
const (
	EventStart   = "start"
	EventUnpause = "unpause"
	EventHeal    = "heal"
	EventError   = "error"
)

// ErrInvalidFaults is wrapped by the error ValidateFaults returns.
var ErrInvalidFaults = errors.New("invalid container faults")

// ContainerFault is a fault applied to the container of one upstream instance, At after the load's start,
// for For (0: to the end of the run, except for restart: at once). Pause and partition are lifted when
// the load ends, before the record is collected. Faults on one instance must not overlap.
type ContainerFault struct {
	At, For  time.Duration
	Service  string
	Instance int
	Kind     string // FaultKill, FaultPause, FaultPartition or FaultRestart
	// Name names the fault in events (e.g. the scenario rule "faults[3]"); "" = container_faults[i].
	Name string
}

// name is the fault's name in events, after its place in the list.
func faultName(i int) string { return fmt.Sprintf("container_faults[%d]", i) }

// end is when the fault is lifted; math.MaxInt64 when it lasts to the end of the run.
func (f ContainerFault) end() time.Duration {
	switch {
	case f.For > 0:
		return f.At + f.For
	case f.Kind == FaultRestart:
		return f.At + 1 // back at once
	}
	return math.MaxInt64
}

// ValidateFaults checks container faults against the scenario: known kind and instance, times within the
// load, no two faults on one instance at the same time. Every problem is reported, by list index.
func ValidateFaults(sc *scenarios.Scenario, faults []ContainerFault) error {
	var errs []error
	services := make([]string, 0, len(sc.Services))
	for n := range sc.Services {
		services = append(services, n)
	}
	sort.Strings(services)
	kinds := []string{FaultKill, FaultPause, FaultPartition, FaultRestart}
	for i, f := range faults {
		path := faultName(i)
		if !slices.Contains(kinds, f.Kind) {
			errs = append(errs, fmt.Errorf("%s.kind: %q: want one of %s", path, f.Kind, strings.Join(kinds, ", ")))
		}
		if svc, ok := sc.Services[f.Service]; !ok {
			errs = append(errs, fmt.Errorf("%s.service: %q: want one of the scenario's services (%s)", path, f.Service, strings.Join(services, ", ")))
		} else if f.Instance < 0 || f.Instance >= svc.Instances {
			errs = append(errs, fmt.Errorf("%s.instance: %d: service %s has instances 0 to %d", path, f.Instance, f.Service, svc.Instances-1))
		}
		if f.At < 0 {
			errs = append(errs, fmt.Errorf("%s.at: %s: want >= 0", path, f.At))
		} else if sc.Load != nil && f.At >= sc.Load.Duration.Duration {
			errs = append(errs, fmt.Errorf("%s.at: %s: want before the end of the load (%s)", path, f.At, sc.Load.Duration.Duration))
		}
		if f.For < 0 {
			errs = append(errs, fmt.Errorf("%s.for: %s: want >= 0 (0: to the end of the run)", path, f.For))
		}
		for j, g := range faults[:i] {
			if g.Service == f.Service && g.Instance == f.Instance && f.At < g.end() && g.At < f.end() {
				errs = append(errs, fmt.Errorf("%s: overlaps %s on %s/%d", path, faultName(j), f.Service, f.Instance))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("docker runner: %w:\n%w", ErrInvalidFaults, err)
	}
	return nil
}

// runFault applies fault i at start+At and lifts it at start+At+For, or when the load is done (kill
// excepted). When ctx ends it stops: cleanup unpauses and removes everything anyway.
func (r *runner) runFault(ctx context.Context, i int, f ContainerFault, start time.Time, done <-chan struct{}) {
	u := r.upstreamOf(f.Service, f.Instance)
	record := func(kind, detail string) {
		r.faultEvent(record.FaultEvent{At: time.Since(start), Service: f.Service, Instance: f.Instance,
			Fault: cmp.Or(f.Name, faultName(i)), Kind: kind, Detail: detail})
		r.logf("%s %s/%d: %s %s", cmp.Or(f.Name, faultName(i)), f.Service, f.Instance, kind, detail)
	}
	if !waitUntil(ctx, done, start.Add(f.At)) {
		return // the load ended first: never applied
	}
	detail, err := r.applyFault(ctx, u, f)
	if err != nil {
		record(EventError, err.Error())
		return
	}
	record(f.Kind, detail)
	switch {
	case f.For > 0:
		waitUntil(ctx, done, start.Add(f.At+f.For))
	case f.Kind == FaultRestart: // back at once
	case f.Kind == FaultKill:
		return // down for the rest of the run
	default:
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
	if ctx.Err() != nil {
		return
	}
	kind, detail, err := r.liftFault(ctx, u, f, start)
	if err != nil {
		record(EventError, err.Error())
		return
	}
	record(kind, detail)
}

func (r *runner) applyFault(ctx context.Context, u *upstream, f ContainerFault) (string, error) {
	id := u.c.GetContainerID()
	switch f.Kind {
	case FaultKill, FaultRestart:
		r.snapshot(ctx, u)
		u.mu.Lock()
		u.down = true
		u.mu.Unlock()
		if f.Kind == FaultKill {
			_, err := r.cli.ContainerKill(ctx, id, client.ContainerKillOptions{Signal: "SIGKILL"})
			return "SIGKILL", err
		}
		grace := stopGrace
		return fmt.Sprintf("stopped (SIGTERM, SIGKILL after %s)", grace), u.c.Stop(ctx, &grace)
	case FaultPause:
		u.mu.Lock()
		u.paused = true
		u.mu.Unlock()
		_, err := r.cli.ContainerPause(ctx, id, client.ContainerPauseOptions{})
		return "paused", err
	case FaultPartition:
		_, err := r.cli.NetworkDisconnect(ctx, r.network.ID, client.NetworkDisconnectOptions{Container: id, Force: true})
		return "disconnected from " + r.network.Name, err
	}
	return "", fmt.Errorf("unknown container fault kind %q", f.Kind)
}

func (r *runner) liftFault(ctx context.Context, u *upstream, f ContainerFault, start time.Time) (kind, detail string, err error) {
	id := u.c.GetContainerID()
	switch f.Kind {
	case FaultKill, FaultRestart:
		err := u.c.Start(ctx) // waits for /ready on the newly published control port
		if busyPort(err) {
			err = startAgain(ctx, u.c)
		}
		if err != nil {
			return "", "", err
		}
		if err := r.setRunStart(ctx, u, start); err != nil {
			return "", "", err
		}
		u.mu.Lock()
		u.down = false
		u.mu.Unlock()
		return EventStart, "running and ready again", nil
	case FaultPause:
		if _, err := r.cli.ContainerUnpause(ctx, id, client.ContainerUnpauseOptions{}); err != nil {
			return "", "", err
		}
		u.mu.Lock()
		u.paused = false
		u.mu.Unlock()
		return EventUnpause, "unpaused", nil
	case FaultPartition:
		connect := client.NetworkConnectOptions{Container: id, EndpointConfig: &network.EndpointSettings{
			Aliases:    u.aliases(),
			IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: u.ip},
		}}
		_, err := r.cli.NetworkConnect(ctx, r.network.ID, connect)
		for try := 0; busyPort(err) && try < 5; try++ { // the control port is published again
			_, _ = r.cli.NetworkDisconnect(ctx, r.network.ID, client.NetworkDisconnectOptions{Container: id, Force: true})
			_, err = r.cli.NetworkConnect(ctx, r.network.ID, connect)
		}
		if err != nil {
			return "", "", err
		}
		return EventHeal, "reconnected to " + r.network.Name + " as " + u.ip.String(), nil
	}
	return "", "", fmt.Errorf("unknown container fault kind %q", f.Kind)
}

// snapshot keeps what an instance reported so far, before a kill or restart loses it. Requests it
// receives between the snapshot and its end are not counted.
func (r *runner) snapshot(ctx context.Context, u *upstream) {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	base, err := r.controlBase(sctx, u)
	var rep UpstreamReport
	if err == nil {
		rep, err = r.cc.record(sctx, base)
	}
	if err != nil {
		r.logf("upstream %s: no record before it goes down: %v", u.name(), err)
		return
	}
	u.mu.Lock()
	u.earlier = append(u.earlier, rep)
	u.mu.Unlock()
}

func (r *runner) upstreamOf(service string, instance int) *upstream {
	for _, u := range r.upstreams {
		if u.service == service && u.index == instance {
			return u
		}
	}
	panic(fmt.Sprintf("docker runner: no upstream %s/%d (ValidateFaults first)", service, instance))
}

// waitUntil waits for t, and reports false when done or ctx came first.
func waitUntil(ctx context.Context, done <-chan struct{}, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-done:
		return false
	case <-ctx.Done():
		return false
	}
}
