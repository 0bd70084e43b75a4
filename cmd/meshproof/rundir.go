package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshproof/meshproof/mesh/tracing"
	"github.com/meshproof/meshproof/reports"
)

// FileIncomplete marks a run directory whose run has not finished: written before the run starts,
// rewritten with the reason when the run is interrupted (its report files then hold what was recorded
// until then), removed once every report file is written. A run that crashed or was killed leaves it.
const FileIncomplete = "INCOMPLETE"

// minFreeBytes is the least free space a run directory's disk must have before a run starts: the
// report files of a long run (report.html with its charts, traces.otlp.json) take tens of megabytes.
const minFreeBytes = 64 << 20

// runFiles are the files a run writes into its directory; a new run removes the previous run's first,
// so that a crash never leaves them looking like this run's.
var runFiles = []string{reports.FileJSON, reports.FileMarkdown, reports.FileJUnit, reports.FileHTML, tracing.FileOTLP}

// runMarker is the INCOMPLETE file of one run directory.
type runMarker struct{ path string }

// startRunDir makes dir ready for a run of scenario: created if needed, writable, with room on its
// disk, the previous run's report files removed, and marked INCOMPLETE. Every failure is said before
// anything starts.
func startRunDir(dir, scenario string) (*runMarker, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err == nil {
		if free := st.Bavail * uint64(st.Bsize); free < minFreeBytes {
			return nil, fmt.Errorf("only %d MiB free on its disk; a run needs at least %d MiB for its report files", free>>20, minFreeBytes>>20)
		}
	}
	m := &runMarker{path: filepath.Join(dir, FileIncomplete)}
	msg := fmt.Sprintf("meshproof run of %s started %s (pid %d).\nWhile this file is here the run has not finished: it is running, or it crashed or was killed.\n",
		scenario, time.Now().Format(time.RFC3339), os.Getpid())
	if err := os.WriteFile(m.path, []byte(msg), 0o644); err != nil {
		return nil, fmt.Errorf("not writable: %w", err)
	}
	for _, f := range runFiles {
		if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("cannot remove the previous run's %s: %w", f, err)
		}
	}
	return m, nil
}

// fail keeps the marker, saying why the run did not finish.
func (m *runMarker) fail(reason error) error {
	msg := fmt.Sprintf("This run did not finish: %v.\nIts report files, if any, hold only what was recorded until then.\n", reason)
	return os.WriteFile(m.path, []byte(msg), 0o644)
}

// done removes the marker: every report file of the run is written.
func (m *runMarker) done() error { return os.Remove(m.path) }

// incomplete returns the first line of dir's INCOMPLETE marker, or "" when dir has none.
func incomplete(dir string) string {
	data, err := os.ReadFile(filepath.Join(dir, FileIncomplete))
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(data), "\n")
	return line
}

// parseSeed parses a command's --seed flag: nil when it is not given; false (the error printed) when it
// is not a non-negative integer.
func parseSeed(cmd, flag string, stderr io.Writer) (*uint64, bool) {
	if flag == "" {
		return nil, true
	}
	n, err := strconv.ParseUint(flag, 10, 64)
	if err != nil {
		fmt.Fprintf(stderr, "meshproof %s: --seed %q: want a non-negative integer\n", cmd, flag)
		return nil, false
	}
	return &n, true
}
