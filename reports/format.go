package reports

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// Every number the writers and the checks' observed texts show goes through the formatters below, with
// SignificantDigits significant digits (never fewer: whole numbers of 10^SignificantDigits and more are
// shown whole) and no trailing zeros, so the same value reads the same everywhere: a latency of 1,002 ms
// is "1.002s", a success rate "98.67%", a ratio "1.257".
const SignificantDigits = 4

// formatSig formats x with SignificantDigits significant digits, without trailing zeros or exponent.
func formatSig(x float64) string { return formatSigN(x, SignificantDigits) }

// formatSigN formats x with n significant digits (all of its integer digits when there are more),
// without trailing zeros or exponent.
func formatSigN(x float64, n int) string {
	if x == 0 || math.IsInf(x, 0) || math.IsNaN(x) {
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	// Round to n significant digits first, so that 9.9996 becomes 10 and takes one decimal fewer.
	r, _ := strconv.ParseFloat(strconv.FormatFloat(x, 'g', n, 64), 64)
	decimals := max(n-1-int(math.Floor(math.Log10(math.Abs(r)))), 0)
	return formatFloat(r, decimals)
}

// formatPercent formats a percentage (0..100) with SignificantDigits significant digits, adding digits
// when rounding would show a value that is not 0 or 100 as "0" or "100": 99.9996 is "99.9996", not "100".
func formatPercent(x float64) string {
	for n := SignificantDigits; ; n++ {
		s := formatSigN(x, n)
		if n >= 12 || (s != "100" || x == 100) && (s != "0" || x == 0) {
			return s
		}
	}
}

// formatRatio formats a ratio (retry_amplification, delivered_amplification).
func formatRatio(x float64) string { return formatSig(x) }

// rate formats a rate in requests per second: "199.8/s".
func rate(x float64) string { return formatSig(x) + "/s" }

// formatDuration shows a duration with SignificantDigits significant digits in the largest fitting unit:
// "850µs", "12.35ms", "1.002s"; under a microsecond in whole nanoseconds.
func formatDuration(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return strconv.FormatInt(int64(d), 10) + "ns"
	case d < time.Millisecond:
		return durationIn(d, time.Microsecond, time.Millisecond, "µs", "ms")
	case d < time.Second:
		return durationIn(d, time.Millisecond, time.Second, "ms", "s")
	}
	return formatSig(d.Seconds()) + "s"
}

// durationIn shows d in unit, or in the next unit up when rounding reaches it (999.96ms is "1s").
func durationIn(d, unit, next time.Duration, name, nextName string) string {
	s := formatSig(float64(d) / float64(unit))
	if x, _ := strconv.ParseFloat(s, 64); x*float64(unit) >= float64(next) {
		return formatSig(float64(d)/float64(next)) + nextName
	}
	return s + name
}

// formatFloat formats x with at most the given decimals, without trailing zeros.
func formatFloat(x float64, decimals int) string {
	s := strconv.FormatFloat(x, 'f', decimals, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	if s == "-0" {
		s = "0"
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
