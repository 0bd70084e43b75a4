package cli

import (
	"flag"
	"fmt"
	"net/url"
	"strings"
)

// The OpenTelemetry SDK environment variables meshproof honours (opentelemetry.io/docs/specs/otel/
// configuration/sdk-environment-variables and protocol/exporter.md). An empty variable is unset.
const (
	// EnvOTLPTracesEndpoint is the OTLP/HTTP traces URL, used as is.
	EnvOTLPTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	// EnvOTLPEndpoint is the base URL of every signal: traces go to it + /v1/traces.
	EnvOTLPEndpoint = "OTEL_EXPORTER_OTLP_ENDPOINT"
	// EnvServiceName is the service.name of the standalone proxy's spans when its bootstrap names none.
	EnvServiceName = "OTEL_SERVICE_NAME"
)

// OTLPEndpointFromEnv is the OTLP/HTTP traces URL the environment names: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
// as is, else OTEL_EXPORTER_OTLP_ENDPOINT with /v1/traces appended to its path; "" for neither.
func OTLPEndpointFromEnv(getenv func(string) string) (string, error) {
	if v := strings.TrimSpace(getenv(EnvOTLPTracesEndpoint)); v != "" {
		if _, err := httpURL(v); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvOTLPTracesEndpoint, v, err)
		}
		return v, nil
	}
	if v := strings.TrimSpace(getenv(EnvOTLPEndpoint)); v != "" {
		u, err := httpURL(v)
		if err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvOTLPEndpoint, v, err)
		}
		return u.JoinPath("v1", "traces").String(), nil
	}
	return "", nil
}

// httpURL parses an OTLP/HTTP endpoint.
func httpURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("want an http:// or https:// URL")
	}
	return u, nil
}

// DefaultOTLPEndpoint fills the --otlp-endpoint flag of fs (parsed) from the environment when the
// command line did not give it: a flag always wins, even an empty one (no export).
func DefaultOTLPEndpoint(fs *flag.FlagSet, endpoint *string, getenv func(string) string) error {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "otlp-endpoint" })
	if given {
		return nil
	}
	v, err := OTLPEndpointFromEnv(getenv)
	if err != nil {
		return err
	}
	*endpoint = v
	return nil
}

// OTLPEndpointHelp is the --otlp-endpoint flag's help: what it does, then its default.
func OTLPEndpointHelp(what string) string {
	return what + " (default $" + EnvOTLPTracesEndpoint + ", else $" + EnvOTLPEndpoint + " + /v1/traces)"
}
