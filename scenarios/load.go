package scenarios

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"

	"github.com/meshproof/meshproof/proxy/config"
)

// Defaults applied by Load.
const (
	DefaultInstances   = 1
	DefaultStatus      = 200
	DefaultLoadTimeout = 30 * time.Second
	MaxInstances       = 256
)

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// LoadFile reads, decodes and validates a scenario file.
func LoadFile(path string) (*Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data, path)
}

// Parse decodes and validates a scenario. Every error is an *Error (several are joined with errors.Join)
// naming file, line, field and what is accepted. Unknown fields are errors.
func Parse(data []byte, file string) (*Scenario, error) {
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil, yamlError(err, file, nil)
	}
	if len(f.Docs) != 1 || f.Docs[0].Body == nil {
		return nil, &Error{File: file, Line: 1, Column: 1, Msg: fmt.Sprintf("expected exactly one YAML document holding a scenario, found %d", countDocs(f))}
	}
	body := f.Docs[0].Body
	if _, ok := body.(*ast.MappingNode); !ok {
		return nil, withFile(nodeError(body, "a scenario is a mapping with the fields %s", strings.Join(yamlFields(reflect.TypeOf(Scenario{})), ", ")), file)
	}
	sc := &Scenario{File: file}
	if err := yaml.NodeToValue(body, sc, yaml.Strict()); err != nil {
		return nil, yamlError(err, file, f)
	}
	v := validator{sc: sc, file: file, root: body}
	v.validate()
	if len(v.errs) > 0 {
		return nil, errors.Join(v.errs...)
	}
	return sc, nil
}

func countDocs(f *ast.File) int {
	n := 0
	for _, d := range f.Docs {
		if d.Body != nil {
			n++
		}
	}
	return n
}

func withFile(e *Error, file string) *Error {
	e.File = file
	return e
}

// yamlError turns a decoding error into an *Error with file and line; for an unknown field it lists the
// fields accepted there.
func yamlError(err error, file string, f *ast.File) error {
	var own *Error
	if errors.As(err, &own) {
		return withFile(own, file)
	}
	var ye yaml.Error
	if !errors.As(err, &ye) {
		return &Error{File: file, Msg: err.Error()}
	}
	e := &Error{File: file, Msg: ye.GetMessage()}
	tok := ye.GetToken()
	if tok != nil && tok.Position != nil {
		e.Line, e.Column = tok.Position.Line, tok.Position.Column
	}
	var unknown *yaml.UnknownFieldError
	if errors.As(err, &unknown) && f != nil && tok != nil {
		if path := pathOfKey(f, tok); path != "" {
			e.Path = fieldPath(path)
			if fields := acceptedAt(e.Path); len(fields) > 0 {
				e.Msg += "; accepted here: " + strings.Join(fields, ", ")
			}
		}
	}
	return e
}

// pathOfKey finds the YAML path of the mapping key at tok's position.
func pathOfKey(f *ast.File, tok *token.Token) string {
	var found string
	ast.Walk(visitorFunc(func(n ast.Node) bool {
		if mv, ok := n.(*ast.MappingValueNode); ok && found == "" {
			kt := mv.Key.GetToken()
			if kt != nil && kt.Position.Line == tok.Position.Line && kt.Position.Column == tok.Position.Column {
				found = mv.Key.GetPath()
			}
		}
		return found == ""
	}), f.Docs[0].Body)
	return found
}

type visitorFunc func(ast.Node) bool

func (v visitorFunc) Visit(n ast.Node) ast.Visitor {
	if v(n) {
		return v
	}
	return nil
}

// acceptedAt lists the fields accepted beside the (unknown) field at path, by following the path through
// the Scenario type.
func acceptedAt(path string) []string {
	segs := strings.Split(path, ".")
	t := reflect.TypeOf(Scenario{})
	for _, seg := range segs[:len(segs)-1] {
		name, _, _ := strings.Cut(seg, "[")
		t = derefType(t)
		switch t.Kind() {
		case reflect.Map:
			t = t.Elem() // the segment is a map key (a service or proxy name)
			continue
		case reflect.Struct:
		default:
			return nil
		}
		sf, ok := fieldByTag(t, name)
		if !ok {
			return nil
		}
		t = sf.Type
		if strings.Contains(seg, "[") {
			t = derefType(t).Elem()
		}
	}
	t = derefType(t)
	if t.Kind() != reflect.Struct {
		return nil
	}
	return yamlFields(t)
}

func derefType(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		sf := t.Field(i)
		if tag, _, _ := strings.Cut(sf.Tag.Get("yaml"), ","); tag == name {
			return sf, true
		}
	}
	return reflect.StructField{}, false
}

func yamlFields(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); tag != "" && tag != "-" {
			out = append(out, tag)
		}
	}
	return out
}

// validator applies defaults and checks a decoded scenario, collecting every error.
type validator struct {
	sc   *Scenario
	file string
	root ast.Node
	errs []error
}

// at reports an error at the node of a field path ("faults[0].abort.status"); when that node is absent,
// at its nearest present parent.
func (v *validator) at(field, format string, args ...any) {
	e := &Error{File: v.file, Path: field, Msg: fmt.Sprintf(format, args...)}
	if n := v.node(field); n != nil {
		if t := n.GetToken(); t != nil && t.Position != nil {
			e.Line, e.Column = t.Position.Line, t.Position.Column
		}
	}
	v.errs = append(v.errs, e)
}

// node walks the AST along a field path, stopping at the deepest node present.
func (v *validator) node(field string) ast.Node {
	cur := v.root
	for _, seg := range strings.Split(field, ".") {
		name, idx, hasIdx := strings.Cut(seg, "[")
		next := mappingValue(cur, name)
		if next == nil {
			return cur
		}
		cur = next
		if hasIdx {
			i, _ := strconv.Atoi(strings.TrimSuffix(idx, "]"))
			if seq, ok := cur.(*ast.SequenceNode); ok && i < len(seq.Values) {
				cur = seq.Values[i]
			}
		}
	}
	return cur
}

func mappingValue(n ast.Node, key string) ast.Node {
	m, ok := n.(*ast.MappingNode)
	if !ok {
		return nil
	}
	for _, mv := range m.Values {
		if mv.Key.GetToken() != nil && mv.Key.GetToken().Value == key {
			return mv.Value
		}
	}
	return nil
}

func (v *validator) validate() {
	sc := v.sc
	if sc.Name == "" {
		v.at("name", "required: a short name for the scenario")
	}
	if len(sc.Services) == 0 {
		v.at("services", "required: at least one service, e.g. services: {backend: {instances: 3}}")
	}
	for _, name := range sortedKeys(sc.Services) {
		v.service(name, sc.Services[name])
	}
	if len(sc.Proxies) == 0 {
		v.at("proxies", "required: at least one proxy, e.g. proxies: {edge: {routes_to: backend}}")
	}
	for _, name := range sortedKeys(sc.Proxies) {
		v.proxy(name, sc.Proxies[name])
	}
	v.load()
	for i, f := range sc.Faults {
		v.fault(fmt.Sprintf("faults[%d]", i), f)
	}
}

func (v *validator) service(name string, s *Service) {
	field := "services." + name
	if !nameRE.MatchString(name) {
		v.at(field, "service name %q: use lowercase letters, digits and '-'", name)
	}
	if s == nil {
		v.at(field, "a service needs at least {instances: N}")
		return
	}
	switch {
	case s.Instances == 0:
		s.Instances = DefaultInstances
	case s.Instances < 0 || s.Instances > MaxInstances:
		v.at(field+".instances", "%d is out of range: 1 to %d", s.Instances, MaxInstances)
	}
	if s.Response.Status == 0 {
		s.Response.Status = DefaultStatus
	} else if s.Response.Status < 100 || s.Response.Status > 599 {
		v.at(field+".response.status", "%d is not an HTTP status (100 to 599)", s.Response.Status)
	}
	if s.Response.Size < 0 {
		v.at(field+".response.size", "%d is negative: a body size in bytes", s.Response.Size)
	}
}

func (v *validator) proxy(name string, p *Proxy) {
	field := "proxies." + name
	if !nameRE.MatchString(name) {
		v.at(field, "proxy name %q: use lowercase letters, digits and '-'", name)
	}
	if p == nil {
		v.at(field, "a proxy needs at least {routes_to: SERVICE}")
		return
	}
	if _, ok := v.sc.Services[p.RoutesTo]; !ok {
		v.at(field+".routes_to", "%q is not a service of this scenario (services: %s)", p.RoutesTo, strings.Join(sortedKeys(v.sc.Services), ", "))
	}
	p.RouteAction, p.ClusterSpec, p.VHostSpec = newRouteAction(), newCluster(), newVirtualHost()
	routeOK := v.envoy(p.Route, p.RouteAction, field+".route")
	clusterOK := v.envoy(p.Cluster, p.ClusterSpec, field+".cluster")
	vhostOK := v.envoy(p.VirtualHost, p.VHostSpec, field+".virtual_host")
	if !routeOK || !clusterOK || !vhostOK {
		return
	}
	for _, f := range generatedFields(p) {
		v.at(field+"."+f.field, "%s is generated from the topology and cannot be set here", f.what)
	}
	if len(v.errs) > 0 {
		return // the bootstrap check below needs a consistent topology
	}
	b, err := BuildBootstrap(v.sc, name, Addresses{Listener: "127.0.0.1:0", Endpoints: placeholderEndpoints(v.sc.Services[p.RoutesTo])})
	if err == nil {
		_, err = config.FromProto(b)
	}
	if err != nil {
		v.configErrors(err, field)
	}
}

// envoy decodes an Envoy-typed node (absent is fine) with the proxy's config decoder.
func (v *validator) envoy(n ast.Node, msg protoMessage, field string) bool {
	if n == nil {
		return true
	}
	if _, isNull := n.(*ast.NullNode); isNull {
		return true
	}
	if err := config.DecodeNode(n, msg, v.file, field); err != nil {
		v.configErrors(err, field)
		return false
	}
	return true
}

// configErrors adds the proxy config decoder's errors as scenario errors; those without a line (from the
// generated bootstrap) are placed at the proxy's field.
func (v *validator) configErrors(err error, field string) {
	errs := config.Errors(err)
	if len(errs) == 0 {
		v.at(field, "%v", err)
		return
	}
	for _, ce := range errs {
		if ce.Line == 0 {
			if f, ok := scenarioField(ce.Path, field); ok {
				v.at(f, "%s", ce.Msg)
			} else {
				v.at(field, "%s: %s", ce.Path, ce.Msg)
			}
			continue
		}
		v.errs = append(v.errs, ce)
	}
}

// bootstrapFields maps the generated bootstrap's paths back to the scenario fields they came from.
var bootstrapFields = []struct{ bootstrap, scenario string }{
	{"static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].route", "route"},
	{"static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0]", "virtual_host"},
	{"static_resources.clusters[0]", "cluster"},
}

// scenarioField translates a path in a proxy's generated bootstrap into the scenario's field path.
func scenarioField(path, proxyField string) (string, bool) {
	for _, m := range bootstrapFields {
		if rest, ok := strings.CutPrefix(path, m.bootstrap); ok && (rest == "" || rest[0] == '.') {
			return proxyField + "." + m.scenario + rest, true
		}
	}
	return "", false
}

func placeholderEndpoints(s *Service) []string {
	eps := make([]string, s.Instances)
	for i := range eps {
		eps[i] = fmt.Sprintf("127.0.0.1:%d", 10000+i)
	}
	return eps
}

var methods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

func (v *validator) load() {
	l := v.sc.Load
	if l == nil {
		v.at("load", "required: e.g. load: {target: edge, rate: 100/s, duration: 5s}")
		return
	}
	if _, ok := v.sc.Proxies[l.Target]; !ok {
		v.at("load.target", "%q is not a proxy of this scenario (proxies: %s)", l.Target, strings.Join(sortedKeys(v.sc.Proxies), ", "))
	}
	if l.Rate.PerSecond <= 0 {
		v.at("load.rate", `required: a rate such as "200/s"`)
	}
	if l.Duration.Duration <= 0 {
		v.at("load.duration", `required: a duration greater than 0, such as "5s"`)
	}
	if l.Path == "" {
		l.Path = "/"
	} else if !strings.HasPrefix(l.Path, "/") {
		v.at("load.path", "%q must start with '/'", l.Path)
	}
	if l.Method == "" {
		l.Method = "GET"
	} else if l.Method = strings.ToUpper(l.Method); !slices.Contains(methods, l.Method) {
		v.at("load.method", "%q is not accepted: one of %s", l.Method, strings.Join(methods, ", "))
	}
	if l.Timeout.Duration == 0 {
		l.Timeout.Duration = DefaultLoadTimeout
	}
}

func (v *validator) fault(field string, f *Fault) {
	if f == nil {
		v.at(field, "a fault needs a service and one of latency, abort, reset")
		return
	}
	svc, ok := v.sc.Services[f.Service]
	if !ok {
		v.at(field+".service", "%q is not a service of this scenario (services: %s)", f.Service, strings.Join(sortedKeys(v.sc.Services), ", "))
	}
	if ok {
		for i, inst := range f.Instances {
			if inst < 0 || inst >= svc.Instances {
				v.at(fmt.Sprintf("%s.instances[%d]", field, i), "instance %d does not exist: %s has instances 0 to %d", inst, f.Service, svc.Instances-1)
			}
		}
	}
	if f.Latency == nil && f.Abort == nil && f.Reset == nil {
		v.at(field, "a fault needs at least one of latency, abort, reset")
	}
	if f.Latency != nil && f.Latency.Fixed.Duration <= 0 {
		v.at(field+".latency.fixed", `required: a delay greater than 0, such as "50ms"`)
	}
	if f.Abort != nil && (f.Abort.Status < 200 || f.Abort.Status > 599) {
		v.at(field+".abort.status", "%d is not accepted: an HTTP status from 200 to 599", f.Abort.Status)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
