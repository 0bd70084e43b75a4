package docker

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
)

// ParseStats reads the proxy's /stats text format, one "name: value" per line, into the form of
// record.Record.ProxyStats: counters and gauges by Envoy name, negative gauges as zero (like the
// embedded runner's proxy.Stats().Values()). Lines whose value is not an integer (Envoy's histogram
// summaries) are skipped; a line without ": " is an error naming its line number.
func ParseStats(text string) (map[string]uint64, error) {
	out := map[string]uint64{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		name, value, ok := strings.Cut(line, ": ")
		if !ok || name == "" {
			return nil, fmt.Errorf("stats line %d: %q: want \"name: value\"", n, line)
		}
		v, err := strconv.ParseInt(strings.TrimSpace(value), 10, 64)
		if err != nil {
			continue // a histogram summary ("P0(nan,nan) …"): not a counter or gauge
		}
		out[name] = uint64(max(v, 0))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("stats: %w", err)
	}
	return out, nil
}
