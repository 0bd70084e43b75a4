package reports

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// formatDuration shows a duration with 3 significant digits in the largest fitting unit: "850µs", "12.3ms", "1.25s".
func formatDuration(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return strconv.FormatInt(int64(d), 10) + "ns"
	case d < time.Millisecond:
		return sig3(float64(d)/1e3) + "µs"
	case d < time.Second:
		return sig3(float64(d)/1e6) + "ms"
	}
	return sig3(d.Seconds()) + "s"
}

// sig3 formats x ≥ 1 with 3 significant digits (more for x ≥ 1000), without trailing zeros.
func sig3(x float64) string {
	decimals := 0
	switch {
	case x < 10:
		decimals = 2
	case x < 100:
		decimals = 1
	}
	return formatFloat(x, decimals)
}

// formatFloat formats x with at most the given decimals, without trailing zeros.
func formatFloat(x float64, decimals int) string {
	s := strconv.FormatFloat(x, 'f', decimals, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

func secondsToDuration(s float64) time.Duration { return time.Duration(math.Round(s * 1e9)) }

// ms converts a duration to float milliseconds, as report.json writes durations.
func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// formatDelay is formatDuration, but "0s" for zero.
func formatDelay(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	return formatDuration(d)
}
