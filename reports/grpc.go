package reports

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/meshproof/meshproof/reports/checks"
)

// grpcName is the name of a gRPC status code ("UNAVAILABLE"), or its number outside 0..16.
func grpcName(code int) string {
	if code >= 0 && code < len(checks.GRPCCodeNames) {
		return checks.GRPCCodeNames[code]
	}
	return fmt.Sprint(code)
}

// grpcCounts renders gRPC calls by status, in code order: "OK: 90, UNAVAILABLE: 10".
func grpcCounts(m map[int]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	parts := make([]string, 0, len(m))
	for _, code := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s: %d", grpcName(code), m[code]))
	}
	return strings.Join(parts, ", ")
}

// grpcStatusNames keys report.json's grpc_statuses by name; nil (left out) without gRPC calls.
func grpcStatusNames(m map[int]uint64) map[string]uint64 {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]uint64, len(m))
	for code, n := range m {
		out[grpcName(code)] = n
	}
	return out
}

// grpcStatusCodes reads grpc_statuses back (names not known are dropped).
func grpcStatusCodes(m map[string]uint64) map[int]uint64 {
	out := map[int]uint64{}
	for name, n := range m {
		if code, ok, err := checks.GRPCStatus("grpc_status(" + name + ")"); ok && err == nil {
			out[code] += n
		}
	}
	return out
}
