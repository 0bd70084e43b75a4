package config

import (
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	commonfaultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// faultFilter converts the HTTP fault filter's configuration.
func (c *converter) faultFilter(f *faultv3.HTTPFault, path string) *FaultFilter {
	out := &FaultFilter{UpstreamCluster: f.GetUpstreamCluster()}
	if f.GetDelay() == nil && f.GetAbort() == nil && f.GetResponseRateLimit() == nil {
		c.fail(path, "the fault filter needs at least one of delay, abort, response_rate_limit")
	}
	if d := f.GetDelay(); d != nil {
		out.Delay = &FaultDelay{Percent: fraction(d.GetPercentage())}
		switch d.GetFaultDelaySecifier().(type) {
		case *commonfaultv3.FaultDelay_FixedDelay:
			out.Delay.Fixed = c.duration(d.GetFixedDelay(), 0, joinPath(path, "delay.fixed_delay"))
		case *commonfaultv3.FaultDelay_HeaderDelay_:
			out.Delay.FromHeader = true
		default:
			c.fail(joinPath(path, "delay"), "required: fixed_delay or header_delay")
		}
	}
	if a := f.GetAbort(); a != nil {
		out.Abort = &FaultAbort{Percent: fraction(a.GetPercentage())}
		switch t := a.GetErrorType().(type) {
		case *faultv3.FaultAbort_HttpStatus:
			out.Abort.HTTPStatus = int(t.HttpStatus) // the proto's own rules keep it in [200, 600)
		case *faultv3.FaultAbort_GrpcStatus:
			code := t.GrpcStatus
			out.Abort.GRPCStatus = &code
		case *faultv3.FaultAbort_HeaderAbort_:
			out.Abort.FromHeader = true
		default:
			c.fail(joinPath(path, "abort"), "required: http_status, grpc_status or header_abort")
		}
	}
	if r := f.GetResponseRateLimit(); r != nil {
		out.RateLimit = &FaultRateLimit{Percent: fraction(r.GetPercentage())}
		switch r.GetLimitType().(type) {
		case *commonfaultv3.FaultRateLimit_FixedLimit_:
			out.RateLimit.KiBps = r.GetFixedLimit().GetLimitKbps()
		case *commonfaultv3.FaultRateLimit_HeaderLimit_:
			out.RateLimit.FromHeader = true
		default:
			c.fail(joinPath(path, "response_rate_limit"), "required: fixed_limit or header_limit")
		}
	}
	if m := f.GetMaxActiveFaults(); m != nil {
		v := m.GetValue()
		out.MaxActiveFaults = &v
	}
	for i, h := range f.GetHeaders() {
		out.Headers = append(out.Headers, c.headerMatcher(h, indexPath(joinPath(path, "headers"), i)))
	}
	return out
}

// fraction converts a FractionalPercent; absent means 0%, as in Envoy: its FaultAbortConfig,
// FaultDelayConfig and FaultRateLimitConfig (source/extensions/filters/common/fault/fault_config.cc)
// take the message's percentage as it is, and an unset one is the zero FractionalPercent (0/100).
func fraction(p *typev3.FractionalPercent) Fraction {
	if p == nil {
		return Fraction{Numerator: 0, Denominator: 100}
	}
	den := map[typev3.FractionalPercent_DenominatorType]uint32{
		typev3.FractionalPercent_HUNDRED:      100,
		typev3.FractionalPercent_TEN_THOUSAND: 10_000,
		typev3.FractionalPercent_MILLION:      1_000_000,
	}[p.GetDenominator()]
	return Fraction{Numerator: min(p.GetNumerator(), den), Denominator: den}
}

// headerMatcher converts the supported subset of HeaderMatcher (string_match, present_match,
// range_match; the deprecated exact_match, prefix_match … are rejected by the subset check).
func (c *converter) headerMatcher(h *routev3.HeaderMatcher, path string) HeaderMatcher {
	out := HeaderMatcher{}
	switch t := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_PresentMatch:
		out.Present = &t.PresentMatch
	case *routev3.HeaderMatcher_StringMatch:
		out = c.stringMatch(t.StringMatch, joinPath(path, "string_match"))
	case *routev3.HeaderMatcher_RangeMatch:
		out.Range = &Int64Range{Start: t.RangeMatch.GetStart(), End: t.RangeMatch.GetEnd()}
	case nil:
		present := true
		out.Present = &present // Envoy: a matcher with only a name matches when the header is present
	}
	out.Name, out.Invert, out.MissingAsEmpty = h.GetName(), h.GetInvertMatch(), h.GetTreatMissingHeaderAsEmpty()
	return out
}

// stringMatch converts a StringMatcher: exact, prefix, suffix, contains (ignore_case applies) or
// safe_regex (a full match; ignore_case does not apply, as in Envoy's StringMatcherImpl).
func (c *converter) stringMatch(sm *matcherv3.StringMatcher, path string) HeaderMatcher {
	str := func(s string) *string { return &s }
	out := HeaderMatcher{IgnoreCase: sm.GetIgnoreCase()}
	switch p := sm.GetMatchPattern().(type) {
	case nil:
		out.Exact = str("")
	case *matcherv3.StringMatcher_Exact:
		out.Exact = str(p.Exact)
	case *matcherv3.StringMatcher_Prefix:
		out.Prefix = str(p.Prefix)
	case *matcherv3.StringMatcher_Suffix:
		out.Suffix = str(p.Suffix)
	case *matcherv3.StringMatcher_Contains:
		out.Contains = str(p.Contains)
	case *matcherv3.StringMatcher_SafeRegex:
		out.Regex = c.regex(p.SafeRegex.GetRegex(), joinPath(joinPath(path, "safe_regex"), "regex"))
	default:
		c.fail(path, "supported: exact, prefix, suffix, contains, safe_regex")
	}
	return out
}
