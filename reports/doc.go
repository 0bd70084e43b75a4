// Package reports computes a run's summary and resilience outcomes from its record (package
// reports/record, the plain data), evaluates the scenario's checks and writes the report files
// (terminal, JSON, Markdown, JUnit XML, HTML). It imports no runtime package: everything here is
// computation and formatting.
package reports
