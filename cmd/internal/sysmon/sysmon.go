// Package sysmon keeps the Go runtime's system monitor out of the proxy's request path.
//
// The monitor (runtime.sysmon) goes into a deep sleep whenever every P is idle, and the next system call
// of a goroutine wakes it again (entersyscall → notewakeup), after which it polls at its shortest
// interval (20 µs) until it has been idle for a while. A proxy at an ordinary rate goes idle between
// most requests, so it pays that wake-up — a futex wake, a context switch to the monitor's thread and
// back, and the monitor's short polls — around every request: measured with `make bench-proxy` on
// 2026-12-07, 4.1–4.6 context switches per proxied request at 4,000 req/s against HAProxy's 0.9–1.1,
// and 0.84–0.97 once the monitor stays awake.
//
// The runtime skips the deep sleep only when GODEBUG's schedtrace is set (proc.go, sysmon: "sysmon
// should not enter deep sleep if schedtrace is enabled"), a setting read once at start and not
// settable with //go:debug. Reexec therefore runs the program again, once, with
// schedtrace=2147483647 added to GODEBUG: the monitor then never deep-sleeps, backs off to its longest
// interval (10 ms) when the proxy is idle, and the scheduler trace it would print every 2^31 ms (24
// days, counted from the host's boot) prints at most that often: one "SCHED …" line on stderr.
package sysmon

import (
	"os"
	"strings"
	"syscall"
)

// Env names the variable that turns Reexec off: MESHPROOF_SYSMON=sleep keeps Go's default.
const Env = "MESHPROOF_SYSMON"

// schedTrace is GODEBUG's schedtrace period in ms: the longest the runtime takes (an int32).
const schedTrace = "schedtrace=2147483647"

// Reexec replaces the process with itself, same arguments, with schedtrace added to GODEBUG, unless
// GODEBUG already sets schedtrace (the user's choice, or this is the re-executed process) or Env is
// "sleep". It returns only when it did not re-execute: nothing to do, or the exec failed (the proxy
// then runs with Go's default monitor; the error is returned for a log line).
func Reexec() error {
	env, ok := reexecEnv(os.Environ())
	if !ok {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	return syscall.Exec(exe, os.Args, env)
}

// reexecEnv is the environment to re-execute with, and whether to: environ with every GODEBUG entry
// replaced by one that keeps the first entry's settings (the one os.Getenv, and so the runtime, reads)
// and adds schedtrace. No re-execution when Env is "sleep" or that GODEBUG sets schedtrace already.
func reexecEnv(environ []string) ([]string, bool) {
	godebug, seen := "", false
	for _, kv := range environ {
		switch {
		case strings.HasPrefix(kv, Env+"="):
			if strings.TrimPrefix(kv, Env+"=") == "sleep" {
				return nil, false
			}
		case strings.HasPrefix(kv, "GODEBUG=") && !seen:
			godebug, seen = strings.TrimPrefix(kv, "GODEBUG="), true
		}
	}
	for _, setting := range strings.Split(godebug, ",") {
		if strings.HasPrefix(strings.TrimSpace(setting), "schedtrace=") {
			return nil, false
		}
	}
	if godebug != "" {
		godebug += ","
	}
	env := []string{"GODEBUG=" + godebug + schedTrace}
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "GODEBUG=") {
			env = append(env, kv)
		}
	}
	return env, true
}
