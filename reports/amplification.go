package reports

import "fmt"

// The two amplification metrics, formatted the same way by the checks and every writer:
//
//	retry_amplification     = upstream_attempts / requests (the attempts the proxy made, see Summary)
//	delivered_amplification = upstream_received / requests (the requests the instances received)

// amplificationCounts shows what a ratio metric divides: "66 upstream attempts / 30 requests".
func amplificationCounts(s Summary, name string) string {
	if name == "delivered_amplification" {
		return fmt.Sprintf("%d received / %d requests", s.UpstreamReceived, s.Requests)
	}
	return fmt.Sprintf("%d upstream attempts / %d requests", s.UpstreamAttempts, s.AttemptsOver)
}

// attemptsNote says how far the upstream attempts of a summary can be trusted: which requests carry an
// attempt count, or that they come from the proxy's counter.
func attemptsNote(s Summary) string {
	switch {
	case s.AttemptsFrom == AttemptsFromProxy:
		return " (from the proxy's upstream_rq_total: the samples carry no attempt counts)"
	case s.AttemptsFrom == AttemptsFromSamples && s.AttemptsOver < s.Requests:
		return fmt.Sprintf(" (attempts known for %d of %d requests)", s.AttemptsOver, s.Requests)
	}
	return ""
}

// retryAmplificationText is retry_amplification for people: "1.2 (12 upstream attempts / 10 requests)",
// or "not recorded".
func retryAmplificationText(s Summary) string {
	if missingAttempts(s) != "" {
		return "not recorded"
	}
	return formatRatio(s.RetryAmplification) + " (" + amplificationCounts(s, "retry_amplification") + ")" + attemptsNote(s)
}

// deliveredAmplificationText is delivered_amplification for people: "0.98 (98 received / 100 requests)",
// or "not recorded".
func deliveredAmplificationText(s Summary) string {
	if missingReceived(s) != "" {
		return "not recorded"
	}
	return formatRatio(s.DeliveredAmplification) + " (" + amplificationCounts(s, "delivered_amplification") + ")"
}
