package reports

// The formatters every writer uses, for specs that compare what the writers show with report.json.
var (
	FormatPercentForTest  = formatPercent
	FormatRatioForTest    = formatRatio
	FormatRateForTest     = rate
	FormatDurationForTest = formatDuration
	FormatDelayForTest    = formatDelay
	DistributionForTest   = distribution
	CountsForTest         = counts[string]
)

// LogTicksForTest marks the report's log axes.
var LogTicksForTest = logTicks{}
