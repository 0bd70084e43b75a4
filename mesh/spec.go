package mesh

import (
	"fmt"

	"github.com/goccy/go-yaml"
)

// Fields are YAML fields written in Go: Envoy v3 fields of a route, cluster or virtual host, a fault
// kind's settings, a load phase. Keys and values are as in a scenario file ("retry_on": "5xx",
// "timeout": "0.25s", "percent": 50).
type Fields = map[string]any

// Spec is a scenario written in Go, field for field as in a scenario file (scenarios/README.md).
// Durations and rates are the file's strings ("250ms", "200/s"). Build validates it with the same
// loader as a file, so the errors are the same, with the same field paths.
type Spec struct {
	Name        string             `yaml:"name"`
	Description string             `yaml:"description,omitempty"`
	Seed        uint64             `yaml:"seed,omitempty"`
	Services    map[string]Service `yaml:"services"`
	Proxies     map[string]Proxy   `yaml:"proxies"`
	Sidecars    Fields             `yaml:"sidecars,omitempty"`
	Load        Load               `yaml:"load"`
	Faults      []FaultRule        `yaml:"faults,omitempty"`
	Checks      []string           `yaml:"checks,omitempty"`
	Changes     []Change           `yaml:"changes,omitempty"`
}

// Change is a configuration change the scenario's control plane pushes to a proxy over xDS at a time
// (scenarios.Change): the proxy's Envoy fields it replaces, and the instances of services its
// clusters hold from then on.
type Change struct {
	At          string           `yaml:"at"`
	For         string           `yaml:"for,omitempty"`
	Proxy       string           `yaml:"proxy,omitempty"`
	Routes      []Fields         `yaml:"routes,omitempty"`
	Route       Fields           `yaml:"route,omitempty"`
	Cluster     Fields           `yaml:"cluster,omitempty"`
	VirtualHost Fields           `yaml:"virtual_host,omitempty"`
	Endpoints   map[string][]int `yaml:"endpoints,omitempty"`
	// Expect is "rejected" for a change the proxy must refuse; "" or "applied" otherwise.
	Expect string `yaml:"expect,omitempty"`
}

// Service is a set of identical instances (scenarios.Service).
type Service struct {
	Instances int      `yaml:"instances,omitempty"`
	Response  Response `yaml:"response,omitempty"`
	// Calls are the calls the service makes for each request: a callee's name, Fields of a call
	// ({service, path, method, optional}) or Fields{"parallel": [...]}.
	Calls             []any  `yaml:"calls,omitempty"`
	OnFailure         int    `yaml:"on_failure,omitempty"`
	PropagateDeadline bool   `yaml:"propagate_deadline,omitempty"`
	Capacity          Fields `yaml:"capacity,omitempty"`
}

// Response is how a healthy instance answers.
type Response struct {
	Status  int    `yaml:"status,omitempty"`
	Size    int    `yaml:"size,omitempty"`
	Latency string `yaml:"latency,omitempty"`
}

// Proxy is a proxy in front of services: RoutesTo one service, or Routes (Envoy v3 routes).
type Proxy struct {
	RoutesTo    string   `yaml:"routes_to,omitempty"`
	Routes      []Fields `yaml:"routes,omitempty"`
	Route       Fields   `yaml:"route,omitempty"`
	Cluster     Fields   `yaml:"cluster,omitempty"`
	VirtualHost Fields   `yaml:"virtual_host,omitempty"`
}

// Load is the open-loop load through one proxy.
type Load struct {
	Target   string            `yaml:"target"`
	Rate     string            `yaml:"rate,omitempty"`
	Duration string            `yaml:"duration,omitempty"`
	Phases   []Fields          `yaml:"phases,omitempty"`
	Path     string            `yaml:"path,omitempty"`
	Method   string            `yaml:"method,omitempty"`
	Headers  map[string]string `yaml:"headers,omitempty"`
	Body     string            `yaml:"body,omitempty"`
	Timeout  string            `yaml:"timeout,omitempty"`
	Mix      []Fields          `yaml:"mix,omitempty"`
}

// FaultRule is one fault rule: which instances, when, and its kinds (faults/README.md). Each kind is Fields,
// e.g. Abort: Fields{"status": 503, "percent": 50}; a kind without settings is an empty Fields
// (Refuse: Fields{}). A nil kind is absent.
type FaultRule struct {
	Service   string
	Instances []int
	Share     string
	At        string
	For       string
	Match     Fields
	Flap      Fields
	First     int
	Every     int

	Latency    Fields
	Abort      Fields
	Reset      Fields
	Hang       Fields
	SlowBody   Fields
	CloseAfter Fields
	Size       Fields
	H2         Fields
	Refuse     Fields
	TCP        Fields
	Container  string
}

// MarshalYAML writes the rule as in a scenario file: the fields that are set, and every kind that is
// not nil, even empty ("refuse: {}").
func (f FaultRule) MarshalYAML() (any, error) {
	out := yaml.MapSlice{{Key: "service", Value: f.Service}}
	add := func(key string, v any, set bool) {
		if set {
			out = append(out, yaml.MapItem{Key: key, Value: v})
		}
	}
	add("instances", f.Instances, f.Instances != nil)
	add("share", f.Share, f.Share != "")
	add("at", f.At, f.At != "")
	add("for", f.For, f.For != "")
	add("match", f.Match, f.Match != nil)
	add("flap", f.Flap, f.Flap != nil)
	add("first", f.First, f.First != 0)
	add("every", f.Every, f.Every != 0)
	for _, k := range []struct {
		key string
		v   Fields
	}{{"latency", f.Latency}, {"abort", f.Abort}, {"reset", f.Reset}, {"hang", f.Hang}, {"slow_body", f.SlowBody},
		{"close_after", f.CloseAfter}, {"size", f.Size}, {"h2", f.H2}, {"refuse", f.Refuse}, {"tcp", f.TCP}} {
		add(k.key, k.v, k.v != nil)
	}
	add("container", f.Container, f.Container != "")
	return out, nil
}

// YAML is the spec as a scenario file.
func (s Spec) YAML() ([]byte, error) {
	data, err := yaml.MarshalWithOptions(s, yaml.UseLiteralStyleIfMultiline(true))
	if err != nil {
		return nil, fmt.Errorf("mesh: spec %q: %w", s.Name, err)
	}
	return data, nil
}

// Build validates the spec as the loader validates a file, named "spec:<Name>.yaml" in errors (their
// lines are those of YAML()'s document).
func (s Spec) Build() (*Scenario, error) {
	data, err := s.YAML()
	if err != nil {
		return nil, err
	}
	return Parse(data, "spec:"+s.Name+".yaml")
}
