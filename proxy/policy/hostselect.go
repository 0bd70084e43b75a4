package policy

// DefaultHostSelectionRetryMaxAttempts is Envoy's default host_selection_retry_max_attempts.
const DefaultHostSelectionRetryMaxAttempts = 1

// PickWithRetryPredicate picks a host under the previous_hosts retry host predicate
// (envoy.retry_host_predicates.previous_hosts): a pick that lands on a host in tried is rejected and the
// load balancer picks again, up to maxAttempts more times (host_selection_retry_max_attempts, default
// 1); then the last pick is accepted even if it was tried before. So it may return a tried host, and
// always does in a single-host cluster. Each pick gets ctx.Attempt = 0, 1, …, which hash-based pickers
// use to move off the rejected host. Returns -1 when the picker finds no eligible host.
func PickWithRetryPredicate(p Picker, ctx PickContext, tried map[int]bool, maxAttempts int) int {
	host := -1
	for attempt := 0; attempt <= max(maxAttempts, 0); attempt++ {
		ctx.Attempt = attempt
		host = p.Pick(ctx)
		if host < 0 || !tried[host] {
			return host
		}
	}
	return host
}
