package scenarios

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/token"
	"golang.org/x/net/http/httpguts"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/meshproof/meshproof/faults"
	"github.com/meshproof/meshproof/faults/field"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/reports/checks"
)

// Defaults applied by Load.
const (
	DefaultInstances   = 1
	DefaultStatus      = 200
	DefaultLoadTimeout = 30 * time.Second
	MaxInstances       = 256
)

// Limits of a scenario's load, checked by validate as by run. Every request's sample is kept for the
// report (64 bytes each), so the planned count bounds the run's memory: 10 million samples are 640 MB.
const (
	MaxRate            = 200_000    // requests/s of a rate, a ramp's end or a burst (one generator process)
	MaxPlannedRequests = 10_000_000 // requests over the whole load
	MaxLoadDuration    = 24 * time.Hour
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
	f, err := config.ParseYAML(data, file)
	if err != nil {
		return nil, err
	}
	return decode(f, file)
}

// decode decodes and validates a parsed scenario file (Parse; ParseWith after its --set overrides).
func decode(f *ast.File, file string) (*Scenario, error) {
	if len(f.Docs) != 1 || f.Docs[0].Body == nil {
		return nil, &Error{File: file, Line: 1, Column: 1, Msg: fmt.Sprintf("expected exactly one YAML document holding a scenario, found %d", countDocs(f))}
	}
	body := f.Docs[0].Body
	if _, ok := body.(*ast.MappingNode); !ok {
		return nil, withFile(nodeError(body, "a scenario is a mapping with the fields %s", strings.Join(yamlFields(reflect.TypeOf(Scenario{})), ", ")), file)
	}
	sc := &Scenario{File: file}
	if err := config.NodeToValue(body, sc, yaml.Strict()); err != nil {
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
		return locateValue(&Error{File: file, Msg: err.Error()}, f)
	}
	e := &Error{File: file, Msg: ye.GetMessage()}
	tok := ye.GetToken()
	if tok != nil && tok.Position != nil {
		e.Line, e.Column = tok.Position.Line, tok.Position.Column
	}
	if m := goTypeMessage.FindStringSubmatch(e.Msg); m != nil {
		// "cannot unmarshal string into Go struct field Scenario.Services of type int" names Go types;
		// say what the file holds and what the field wants, at the value's field path.
		e.Msg = fmt.Sprintf("%s where %s is expected", yamlKind(m[1], tok), goTypeWords(m[2]))
		if f != nil && tok != nil {
			e.Path = fieldPath(pathOfValue(f, tok))
		}
	}
	var unknown *yaml.UnknownFieldError
	if errors.As(err, &unknown) && f != nil && tok != nil {
		// The decoder names one unknown field of a mapping, picked from a Go map: name the first of the
		// file, at the path of the mapping that holds it (a flow mapping's key without a value has the
		// mapping's path as its own in the parser, so the key's path cannot be trusted).
		if m := mappingOfKey(f, tok); m != nil {
			mpath := fieldPath(m.GetPath())
			accepted := acceptedAt(joinPath(mpath, "?"))
			if first := firstUnknown(m, accepted); first != nil {
				tok = first.GetToken()
				e.Line, e.Column = tok.Position.Line, tok.Position.Column
				e.Msg = fmt.Sprintf("unknown field %q", tok.Value)
				e.Path = joinPath(mpath, tok.Value)
				if len(accepted) > 0 {
					e.Msg += "; accepted here: " + strings.Join(accepted, ", ")
				}
			}
		}
	}
	return e
}

// quoted finds the value a decoder message quotes (time: invalid duration "soon").
var quoted = regexp.MustCompile(`"([^"]*)"`)

// locateValue gives a position-less decoding error (such as a bad duration) the line and field of the
// one scalar in the file that holds the value it quotes.
// When no single scalar holds the value (or the message quotes none), the error is put at the start of
// the document: every error of a file has a line within it.
func locateValue(e *Error, f *ast.File) *Error {
	if f == nil {
		return e
	}
	m := quoted.FindStringSubmatch(e.Msg)
	var found []ast.Node
	if m != nil {
		ast.Walk(visitorFunc(func(n ast.Node) bool {
			if sn, ok := n.(ast.ScalarNode); ok && sn.GetToken() != nil && sn.GetToken().Value == m[1] {
				found = append(found, n)
			}
			return true
		}), f.Docs[0].Body)
	}
	if len(found) != 1 {
		// E.g. "{fixed:00A0}": a flow mapping whose colon has no space is one scalar, "fixed:00A0".
		e.Line, e.Column = 1, 1
		if t := f.Docs[0].Body.GetToken(); t != nil && t.Position != nil && t.Position.Line > 0 {
			e.Line, e.Column = t.Position.Line, t.Position.Column
		}
		return e
	}
	pos := found[0].GetToken().Position
	e.Line, e.Column, e.Path = pos.Line, pos.Column, fieldPath(found[0].GetPath())
	if strings.Contains(e.Msg, "duration") {
		e.Msg += `; want a duration such as "250ms", "1.5s" or "2m"`
	}
	return e
}

// mappingOfKey returns the mapping that holds the key at tok's position; nil when there is none.
func mappingOfKey(f *ast.File, tok *token.Token) *ast.MappingNode {
	var found *ast.MappingNode
	ast.Walk(visitorFunc(func(n ast.Node) bool {
		m, ok := n.(*ast.MappingNode)
		if !ok || found != nil {
			return found == nil
		}
		for _, mv := range m.Values {
			if kt := mv.Key.GetToken(); kt != nil && kt.Position != nil && kt.Position.Line == tok.Position.Line && kt.Position.Column == tok.Position.Column {
				found = m
			}
		}
		return found == nil
	}), f.Docs[0].Body)
	return found
}

// firstUnknown returns the key of m that comes first in the file and is not an accepted field.
func firstUnknown(m *ast.MappingNode, accepted []string) ast.Node {
	var first ast.Node
	for _, mv := range m.Values {
		kt := mv.Key.GetToken()
		if kt == nil || kt.Position == nil || slices.Contains(accepted, kt.Value) || kt.Value == "<<" {
			continue
		}
		if first == nil || before(kt.Position, first.GetToken().Position) {
			first = mv.Key
		}
	}
	return first
}

// joinPath appends a key to a field path ("" is the root).
func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func before(a, b *token.Position) bool {
	return a.Line < b.Line || a.Line == b.Line && a.Column < b.Column
}

// goTypeMessage matches the decoder's type mismatch message, which names Go types.
var goTypeMessage = regexp.MustCompile(`cannot unmarshal (.+?) into Go (?:struct field \S+|value) of type (\S+)`)

// yamlKind says what a value is in the file's terms: "many" (text), 3.5 (a number), a mapping.
func yamlKind(kind string, tok *token.Token) string {
	if tok != nil && (kind == "string" || kind == "number" || kind == "bool") {
		return fmt.Sprintf("%q (%s)", tok.Value, map[string]string{"string": "text", "number": "a number", "bool": "true/false"}[kind])
	}
	return goTypeWords(kind)
}

// goTypeWords names a Go field type the way a scenario's author thinks of it.
func goTypeWords(t string) string {
	switch {
	case strings.HasPrefix(t, "int") || strings.HasPrefix(t, "uint"):
		return "a whole number"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case t == "string":
		return "text"
	case t == "bool":
		return "true or false"
	case strings.HasPrefix(t, "[]"), t == "array", t == "sequence":
		return "a list"
	case t == "object", t == "mapping":
		return "a mapping"
	case strings.HasPrefix(t, "map["), strings.HasPrefix(t, "*"), strings.Contains(t, "."):
		return "a mapping"
	}
	return t
}

// pathOfValue returns the YAML path of the value (scalar, list or mapping) whose token is tok.
func pathOfValue(f *ast.File, tok *token.Token) string {
	var found string
	ast.Walk(visitorFunc(func(n ast.Node) bool {
		if _, isKey := n.(*ast.MappingValueNode); !isKey && found == "" {
			if t := n.GetToken(); t != nil && t.Position != nil && t.Position.Line == tok.Position.Line && t.Position.Column == tok.Position.Column {
				found = n.GetPath()
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
		tag, opts, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if tag == name {
			return sf, true
		}
		if opts == "inline" {
			if inner, ok := fieldByTag(derefType(sf.Type), name); ok {
				return inner, true
			}
		}
	}
	return reflect.StructField{}, false
}

// yamlFields lists a struct's YAML keys, those of inline structs included.
func yamlFields(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		tag, opts, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		switch {
		case opts == "inline":
			out = append(out, yamlFields(derefType(t.Field(i).Type))...)
		case tag != "" && tag != "-":
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
	e.Line, e.Column = v.position(field)
	v.errs = append(v.errs, e)
}

// position is where a message about a field path points: the deepest node of the path present in the
// file; for a block mapping, its key ("latency:"), or its first key when it is a list item, rather than
// the colon after its first key. 0, 0 when the file has no position for it.
func (v *validator) position(field string) (line, column int) {
	cur := v.root
	var key *token.Token // the key cur is the value of; nil for a list item or the root
	for _, seg := range strings.Split(field, ".") {
		name, idx, hasIdx := strings.Cut(seg, "[")
		mv := mappingEntry(cur, name)
		if mv == nil {
			break
		}
		cur, key = mv.Value, mv.Key.GetToken()
		if hasIdx {
			i, _ := strconv.Atoi(strings.TrimSuffix(idx, "]"))
			if seq, ok := cur.(*ast.SequenceNode); ok && i < len(seq.Values) {
				cur, key = seq.Values[i], nil
			}
		}
	}
	t := cur.GetToken()
	if m, ok := cur.(*ast.MappingNode); ok && !m.IsFlowStyle {
		switch {
		case key != nil:
			t = key
		case len(m.Values) > 0:
			t = m.Values[0].Key.GetToken()
		}
	}
	if t == nil || t.Position == nil {
		return 0, 0
	}
	return t.Position.Line, t.Position.Column
}

func mappingValue(n ast.Node, key string) ast.Node {
	if mv := mappingEntry(n, key); mv != nil {
		return mv.Value
	}
	return nil
}

// mappingEntry returns the key: value entry of a mapping node; nil when n is not a mapping or has no key.
func mappingEntry(n ast.Node, key string) *ast.MappingValueNode {
	m, ok := n.(*ast.MappingNode)
	if !ok {
		return nil
	}
	for _, mv := range m.Values {
		if mv.Key.GetToken() != nil && mv.Key.GetToken().Value == key {
			return mv
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
	v.markUpstreamHTTP2()
	for _, name := range sortedKeys(sc.Proxies) {
		v.proxy(name, sc.Proxies[name])
	}
	v.meshValidate()
	v.meshTLS()
	v.load()
	for i, f := range sc.Faults {
		v.fault(i, f)
	}
	var phaseNames []string
	if sc.Load != nil {
		for _, p := range sc.Load.Phases {
			if p != nil {
				phaseNames = append(phaseNames, p.Name)
			}
		}
	}
	var edgePairs [][2]string
	for _, e := range sc.Edges() {
		edgePairs = append(edgePairs, [2]string{e.Caller, e.Callee})
	}
	for i, c := range sc.Checks {
		field := fmt.Sprintf("checks[%d]", i)
		if c.parseErr != nil {
			e := *c.parseErr
			e.File, e.Path = v.file, field
			v.errs = append(v.errs, &e)
			continue
		}
		if err := checks.ValidateScope(c.Check, checks.ScopeContext{Faults: len(sc.Faults), Changes: len(sc.Changes), Phases: phaseNames, Services: sortedKeys(sc.Services), Edges: edgePairs}); err != nil {
			v.at(field, "%v", err)
		}
		if host, ok := strings.CutPrefix(c.Metric, "ejected("); ok {
			v.ejectedHost(field, strings.TrimSuffix(host, ")"))
		}
	}
	v.faultTiming()
	if len(v.errs) == 0 { // a change starts from its proxy's configuration, which must be sound first
		v.changes()
	}
}

// ejectedHost checks that the host of an ejected() check is an instance of the scenario: a check on a
// host that does not exist can never hold, and is a typo.
func (v *validator) ejectedHost(field, host string) {
	svc, idx, ok := strings.Cut(host, "/")
	n, err := strconv.Atoi(idx)
	s, known := v.sc.Services[svc]
	switch {
	case !ok || err != nil:
		v.at(field, "ejected(%s): want SERVICE/INSTANCE, e.g. ejected(%s/0)", host, firstKey(v.sc.Services))
	case !known:
		v.at(field, "ejected(%s): %q is not a service of this scenario (services: %s)", host, svc, strings.Join(sortedKeys(v.sc.Services), ", "))
	case s != nil && (n < 0 || n >= s.Instances):
		v.at(field, "ejected(%s): instance %d does not exist: %s has instances 0 to %d", host, n, svc, s.Instances-1)
	}
}

func firstKey[V any](m map[string]V) string {
	if keys := sortedKeys(m); len(keys) > 0 {
		return keys[0]
	}
	return "service"
}

// faultTiming refuses a fault window that starts at or after the load's end: nothing it does is ever
// seen by a request (the report showed a "5s–5s" window).
func (v *validator) faultTiming() {
	if v.sc.Load == nil {
		return
	}
	end := v.sc.Load.Total()
	if end <= 0 {
		return
	}
	for i, f := range v.sc.Faults {
		if f != nil && f.Start >= end {
			v.at(fmt.Sprintf("faults[%d].at", i), "starts at %s, when the load (%s) has ended: no request would meet it", f.Start, end)
		}
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
	if s.Response.Size < 0 || s.Response.Size > faults.MaxBodyBytes {
		v.at(field+".response.size", "%d is out of range: a body size in bytes, 0 to %d (1 GiB)", s.Response.Size, faults.MaxBodyBytes)
	}
}

func (v *validator) proxy(name string, p *Proxy) {
	field := "proxies." + name
	if !nameRE.MatchString(name) {
		v.at(field, "proxy name %q: use lowercase letters, digits and '-'", name)
	}
	if p == nil {
		v.at(field, "a proxy needs {routes_to: SERVICE} or {routes: [...]}")
		return
	}
	v.proxyConfig(field, name, p)
}

// proxyConfig decodes and checks the Envoy fields of the proxy called name, configured as p, written at
// field (proxies.NAME, or changes[N] for its state after a change): routes or routes_to, the route,
// cluster and virtual host fields, then the bootstrap they generate, with the proxy's own decoder.
func (v *validator) proxyConfig(field, name string, p *Proxy) {
	hasRoutes := p.Routes != nil && !isNull(p.Routes)
	switch {
	case p.RoutesTo != "" && hasRoutes:
		v.at(field+".routes", "a proxy has either routes_to (everything to one service) or routes, not both")
	case p.RoutesTo == "" && !hasRoutes:
		v.at(field, "a proxy needs {routes_to: SERVICE} or {routes: [...]} (Envoy v3 routes whose clusters are services)")
	case p.RoutesTo != "":
		if _, ok := v.sc.Services[p.RoutesTo]; !ok {
			v.at(field+".routes_to", "%q is not a service of this scenario (services: %s)", p.RoutesTo, strings.Join(sortedKeys(v.sc.Services), ", "))
		}
	}
	p.RouteAction, p.ClusterSpec, p.VHostSpec = newRouteAction(), newCluster(), newVirtualHost()
	routesOK := !hasRoutes || v.routes(p, field)
	routeOK := v.envoy(p.Route, p.RouteAction, field+".route")
	clusterOK := v.envoy(p.Cluster, p.ClusterSpec, field+".cluster")
	vhostOK := v.envoy(p.VirtualHost, p.VHostSpec, field+".virtual_host")
	if !routesOK || !routeOK || !clusterOK || !vhostOK {
		return
	}
	if hasRoutes && p.Route != nil && !isNull(p.Route) {
		v.at(field+".route", "with routes, set the route fields in each route (routes[N].route), as in Envoy")
	}
	for _, f := range generatedFields(p) {
		v.at(field+"."+f.field, "%s is generated from the topology and cannot be set here", f.what)
	}
	if len(v.errs) > 0 {
		return // the bootstrap check below needs a consistent topology
	}
	endpoints := map[string][]string{}
	for _, svc := range p.Services() {
		endpoints[svc] = placeholderEndpoints(v.sc.Services[svc])
	}
	b, err := proxyBootstrap(p, name, Addresses{Listener: "127.0.0.1:0", Endpoints: endpoints})
	var cfg *config.Bootstrap
	if err == nil {
		cfg, err = config.FromProto(b)
	}
	if err != nil {
		v.configErrors(err, field, p)
		return
	}
	v.proxyWarnings(field, p, cfg)
}

// routes decodes a proxy's routes, each an Envoy v3 Route, and checks that every cluster they name is a
// service of the scenario.
func (v *validator) routes(p *Proxy, field string) bool {
	seq, ok := p.Routes.(*ast.SequenceNode)
	if !ok || len(seq.Values) == 0 {
		v.at(field+".routes", "want a list of Envoy v3 routes, e.g. [{match: {prefix: /}, route: {cluster: SERVICE}}]")
		return false
	}
	ok = true
	p.RouteSpecs = nil
	for i, n := range seq.Values {
		f := fmt.Sprintf("%s.routes[%d]", field, i)
		r := &routev3.Route{}
		if !v.envoy(n, r, f) {
			ok = false
			continue
		}
		p.RouteSpecs = append(p.RouteSpecs, r)
		for _, c := range routeClusters(r) {
			if _, known := v.sc.Services[c.name]; !known {
				v.at(f+"."+c.field, "%q is not a service of this scenario (services: %s): a route's clusters are the scenario's services", c.name, strings.Join(sortedKeys(v.sc.Services), ", "))
				ok = false
			}
		}
	}
	return ok
}

func isNull(n ast.Node) bool {
	_, null := n.(*ast.NullNode)
	return null
}

// proxyWarnings says which legal settings of a proxy cannot do what they seem to: Envoy accepts them,
// and so does meshproof, but the author should know.
func (v *validator) proxyWarnings(field string, p *Proxy, cfg *config.Bootstrap) {
	services := p.Services()
	bootstrapWarnings(cfg, func(w bootstrapWarning) {
		switch {
		case w.route >= 0 && len(p.RouteSpecs) > 0:
			v.warn(fmt.Sprintf("%s.routes[%d].%s", field, w.route, w.field), "%s", w.msg)
		case w.route < 0 && len(services) > 1 && w.index < len(services):
			v.warn(field+"."+w.field, "%s (cluster %s)", w.msg, services[w.index])
		default:
			v.warn(field+"."+w.field, "%s", w.msg)
		}
	})
}

// bootstrapWarnings calls warn for each legal setting of a generated bootstrap that cannot do what it
// seems to, with the scenario field below the proxy or edge it is at ("route.retry_policy.per_try_timeout",
// "cluster.outlier_detection.max_ejection_percent") and the index of the virtual host or cluster.
func bootstrapWarnings(cfg *config.Bootstrap, warn func(bootstrapWarning)) {
	for _, l := range cfg.Listeners {
		for i, vh := range l.Routes.VirtualHosts {
			for j, r := range vh.Routes {
				if msg := perTryWarning(r, vh); msg != "" {
					warn(bootstrapWarning{"route.retry_policy.per_try_timeout", i, j, msg})
				}
			}
		}
	}
	for i, c := range cfg.Clusters {
		if msg := ejectionWarning(c); msg != "" {
			warn(bootstrapWarning{"cluster.outlier_detection.max_ejection_percent", i, -1, msg})
		}
	}
}

// bootstrapWarning is one warning of bootstrapWarnings: the scenario field below the proxy or edge,
// the index of the virtual host (route warnings) or cluster (cluster warnings), the index of the route
// in its virtual host (-1 for a cluster), and the message.
type bootstrapWarning struct {
	field        string
	index, route int
	msg          string
}

// perTryWarning is the warning for a route whose per-try timeout is longer than its route timeout.
func perTryWarning(r config.Route, vh config.VirtualHost) string {
	rp := r.Action.RetryPolicy
	if rp == nil {
		rp = vh.RetryPolicy
	}
	if rp != nil && r.Action.Timeout > 0 && rp.PerTryTimeout > r.Action.Timeout {
		return fmt.Sprintf("per_try_timeout %s is longer than the route timeout %s: the route timeout ends the request first, so no attempt is ever cut by its per-try timeout and no retry follows one (Envoy's router)",
			rp.PerTryTimeout, r.Action.Timeout)
	}
	return ""
}

// ejectionWarning is the warning for outlier detection whose max_ejection_percent allows no ejection
// with the cluster's host count.
func ejectionWarning(c config.Cluster) string {
	o, n := c.Outlier, len(c.Endpoints)
	if o == nil || n == 0 || o.AlwaysEjectOneHost {
		return ""
	}
	// Envoy ejects a host only while 100·(ejected+1) <= max_ejection_percent·hosts
	// (source/common/upstream/outlier_detection_impl.cc, DetectorImpl::ejectHost).
	if maxPct := min(o.MaxEjectionPercent, 100); 100 > uint64(maxPct)*uint64(n) {
		return fmt.Sprintf("max_ejection_percent %d with %d hosts never allows an ejection (one host is %.4g%% of the cluster): outlier detection will detect but never eject; raise it to at least %d or set always_eject_one_host",
			maxPct, n, 100/float64(n), (100+n-1)/n)
	}
	return ""
}

// warn records a warning at the node of a field path, as at does for an error.
func (v *validator) warn(field, format string, args ...any) {
	e := &Error{File: v.file, Path: field, Msg: "warning: " + fmt.Sprintf(format, args...)}
	e.Line, e.Column = v.position(field)
	v.sc.Warnings = append(v.sc.Warnings, e)
}

// envoy decodes an Envoy-typed node (absent is fine) with the proxy's config decoder.
func (v *validator) envoy(n ast.Node, msg protoMessage, field string) bool {
	if n == nil {
		return true
	}
	if isNull(n) {
		return true
	}
	if err := config.DecodeNode(n, msg, v.file, field); err != nil {
		v.configErrors(err, field, nil)
		return false
	}
	return true
}

// configErrors adds the proxy config decoder's errors as scenario errors; those without a line (from the
// generated bootstrap) are placed at the proxy's field.
func (v *validator) configErrors(err error, field string, p *Proxy) {
	errs := config.Errors(err)
	if len(errs) == 0 {
		v.at(field, "%v", err)
		return
	}
	for _, ce := range errs {
		if ce.Line == 0 {
			if f, ok := scenarioField(ce.Path, field, p); ok {
				v.at(f, "%s", ce.Msg)
			} else {
				v.at(field, "%s: %s", ce.Path, ce.Msg)
			}
			continue
		}
		v.errs = append(v.errs, ce)
	}
}

// The generated bootstrap's paths that come from a proxy's scenario fields.
const (
	bootstrapVHost   = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0]"
	bootstrapCluster = "static_resources.clusters["
)

// scenarioField translates a path in a proxy's generated bootstrap into the scenario's field path: the
// virtual host's routes are the proxy's routes (or, with routes_to, its single route's action is the
// proxy's route), the virtual host is its virtual_host, and every cluster comes from its cluster.
func scenarioField(path, proxyField string, p *Proxy) (string, bool) {
	if rest, ok := strings.CutPrefix(path, bootstrapVHost+".routes"); ok && p != nil && len(p.RouteSpecs) > 0 {
		return proxyField + ".routes" + rest, true
	}
	if rest, ok := strings.CutPrefix(path, bootstrapVHost+".routes[0].route"); ok && (rest == "" || rest[0] == '.') {
		return proxyField + ".route" + rest, true
	}
	if rest, ok := strings.CutPrefix(path, bootstrapVHost); ok && (rest == "" || rest[0] == '.') {
		return proxyField + ".virtual_host" + rest, true
	}
	if rest, ok := strings.CutPrefix(path, bootstrapCluster); ok {
		if _, rest, ok := strings.Cut(rest, "]"); ok && (rest == "" || rest[0] == '.') {
			return proxyField + ".cluster" + rest, true
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
	if len(l.Phases) > 0 {
		v.phases(l)
	} else {
		if l.Rate.PerSecond <= 0 {
			v.at("load.rate", `required: a rate such as "200/s" (or phases)`)
		}
		if l.Duration.Duration <= 0 {
			v.at("load.duration", `required: a duration greater than 0, such as "5s" (or phases)`)
		}
	}
	v.loadLimits(l)
	v.protocol(l)
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
	v.headers("load.headers", l.Headers)
	v.mix(l)
}

// MaxMix is the most entries a load's mix holds.
const MaxMix = 100

// mix checks the load's weighted request mix and fills in its defaults.
func (v *validator) mix(l *Load) {
	if len(l.Mix) > MaxMix {
		v.at("load.mix", "%d entries: at most %d", len(l.Mix), MaxMix)
		return
	}
	for i, r := range l.Mix {
		field := fmt.Sprintf("load.mix[%d]", i)
		if r == nil {
			v.at(field, "an empty entry: want {weight, path, method, headers, body}, each optional")
			continue
		}
		switch {
		case r.Weight == 0:
			r.Weight = 1
		case r.Weight < 0 || r.Weight > 1_000_000:
			v.at(field+".weight", "%d is out of range: a relative weight, 1 to 1000000", r.Weight)
		}
		if r.Path != "" && !strings.HasPrefix(r.Path, "/") {
			v.at(field+".path", "%q must start with '/'", r.Path)
		}
		if r.Method != "" {
			if r.Method = strings.ToUpper(r.Method); !slices.Contains(methods, r.Method) {
				v.at(field+".method", "%q is not accepted: one of %s", r.Method, strings.Join(methods, ", "))
			}
		}
		v.headers(field+".headers", r.Headers)
	}
}

// headers checks the names and values of request headers the load sends.
func (v *validator) headers(field string, h map[string]string) {
	for _, name := range sortedKeys(h) {
		if !httpguts.ValidHeaderFieldName(name) {
			v.at(field, "%q is not a header name (RFC 9110 token characters only)", name)
		}
		if strings.ContainsAny(h[name], "\r\n\x00") {
			v.at(field+"."+name, "a header value cannot hold CR, LF or NUL")
		}
	}
}

// loadLimits refuses a load the generator cannot send or the run cannot hold: a rate above MaxRate,
// more than MaxPlannedRequests in all, or longer than MaxLoadDuration.
func (v *validator) loadLimits(l *Load) {
	tooFast := false // a rate error already explains a planned count out of bounds
	rate := func(field string, r Rate) {
		if r.PerSecond > MaxRate {
			tooFast = true
			v.at(field, "%g/s is above the largest rate, %d/s", r.PerSecond, MaxRate)
		}
	}
	rate("load.rate", l.Rate)
	for i, p := range l.Phases {
		if p == nil {
			continue
		}
		field := fmt.Sprintf("load.phases[%d]", i)
		rate(field+".rate", p.Rate)
		if p.Ramp != nil {
			rate(field+".ramp.from", p.Ramp.From)
			rate(field+".ramp.to", p.Ramp.To)
		}
		if p.Burst != nil && p.Burst.Requests > MaxRate {
			tooFast = true
			v.at(field+".burst.requests", "%d is above the largest burst, %d requests", p.Burst.Requests, MaxRate)
		}
	}
	switch total := l.Total(); {
	case total > MaxLoadDuration:
		v.at("load", "lasts %s, longer than the longest load, %s", total, MaxLoadDuration)
	case l.Planned() > MaxPlannedRequests && !tooFast:
		v.at("load", "plans %.4g requests, more than %d (each request's sample is kept for the report)", l.Planned(), MaxPlannedRequests)
	}
}

// phases checks the load's named phases: each a rate, a ramp or bursts, with a unique name.
func (v *validator) phases(l *Load) {
	if l.Rate.PerSecond > 0 || l.Duration.Duration > 0 {
		v.at("load.phases", "give phases, or rate and duration, not both")
	}
	seen := map[string]bool{}
	for i, p := range l.Phases {
		field := fmt.Sprintf("load.phases[%d]", i)
		if p == nil {
			v.at(field, "a phase needs a name, a duration and one of rate, ramp, burst")
			continue
		}
		if !nameRE.MatchString(p.Name) {
			v.at(field+".name", "%q: a phase name of lowercase letters, digits and '-'", p.Name)
		} else if seen[p.Name] {
			v.at(field+".name", "%q is already the name of another phase", p.Name)
		}
		seen[p.Name] = true
		if p.Duration.Duration <= 0 {
			v.at(field+".duration", `required: a duration greater than 0, such as "10s"`)
		}
		kinds := 0
		for _, set := range []bool{p.Rate.PerSecond > 0, p.Ramp != nil, p.Burst != nil} {
			if set {
				kinds++
			}
		}
		switch {
		case kinds != 1:
			v.at(field, "want exactly one of rate, ramp: {from, to}, burst: {requests, every}")
		case p.Ramp != nil && (p.Ramp.From.PerSecond <= 0 || p.Ramp.To.PerSecond <= 0):
			v.at(field+".ramp", `want from and to, rates such as "100/s"`)
		case p.Burst != nil && (p.Burst.Requests <= 0 || p.Burst.Every.Duration <= 0):
			v.at(field+".burst", `want requests > 0 and every, a duration such as "1s"`)
		}
	}
}

func (v *validator) fault(i int, f *Fault) {
	field := fmt.Sprintf("faults[%d]", i)
	if f == nil {
		v.at(field, "a fault needs a service and one of %s, tcp, container", strings.Join(faults.KindNames(), ", "))
		return
	}
	svc, ok := v.sc.Services[f.Service]
	if !ok {
		v.at(field+".service", "%q is not a service of this scenario (services: %s)", f.Service, strings.Join(sortedKeys(v.sc.Services), ", "))
		return
	}
	if svc == nil {
		return // a service written empty ("backend:") has its own error; its instances are unknown
	}
	for j, inst := range f.Instances {
		if inst < 0 || inst >= svc.Instances {
			v.at(fmt.Sprintf("%s.instances[%d]", field, j), "instance %d does not exist: %s has instances 0 to %d", inst, f.Service, svc.Instances-1)
		}
	}
	switch {
	case f.Share.Set && len(f.Instances) > 0:
		v.at(field+".share", "give instances or share, not both")
	case f.Share.Set:
		f.Instances = shareOf(v.sc.Seed, i, svc.Instances, f.Share.Value)
	}
	v.defaultPercents(field, f)
	if f.TCP != nil {
		if len(f.TCP.Toxics) == 0 {
			v.at(field+".tcp.toxics", "required: at least one toxic")
		}
		for j := range f.TCP.Toxics {
			t := &f.TCP.Toxics[j]
			tfield := fmt.Sprintf("%s.tcp.toxics[%d]", field, j)
			if !v.has(tfield + ".toxicity") {
				t.Toxicity = 100
			}
			v.policyErrors(tfield, t.Validate())
		}
	}
	if f.Container != "" {
		switch {
		case !slices.Contains(ContainerKinds, f.Container):
			v.at(field+".container", "%q is not accepted: one of %s", f.Container, strings.Join(ContainerKinds, ", "))
		case f.hasHTTPKind() || f.TCP != nil:
			v.at(field+".container", "a container fault stands alone in its rule: move the other kinds to a rule of their own")
		}
	}
	if (f.TCP != nil || f.Container != "") && !f.hasHTTPKind() {
		// A TCP or container rule: the HTTP fault model has nothing to check but its timing.
		v.policyErrors(field, faults.Fault{Start: f.Start, Duration: f.Duration, Refuse: &faults.Refuse{}}.Validate())
		return
	}
	v.policyErrors(field, f.Fault.Validate())
}

// defaultPercents gives every fault kind written without a percent the default, 100%.
func (v *validator) defaultPercents(field string, f *Fault) {
	for _, k := range faults.Kinds() {
		if p := k.Percent(&f.Fault); p != nil && !v.has(field+"."+k.Name+".percent") {
			*p = faults.DefaultPercent
		}
	}
}

// policyFields maps the fault models' names of fields to the scenario's keys.
var policyFields = map[string]string{"start": "at", "duration": "for"}

// policyErrors reports a model's validation errors (field errors, joined; see internal/field) at the
// lines of the fields they name, below base.
func (v *validator) policyErrors(base string, err error) {
	for _, fe := range field.All(err) {
		sub := fe.Field()
		if alias, ok := policyFields[sub]; ok {
			sub = alias
		}
		msg := fe.Reason()
		if among := fe.Among(); len(among) > 0 {
			msg = "{" + strings.Join(among, ",") + "}: " + msg
		}
		v.at(field.Join(base, sub), "%s", msg)
	}
}

// has says whether a field path is written in the file.
func (v *validator) has(field string) bool {
	cur := v.root
	for _, seg := range strings.Split(field, ".") {
		name, idx, hasIdx := strings.Cut(seg, "[")
		if cur = mappingValue(cur, name); cur == nil {
			return false
		}
		if hasIdx {
			i, _ := strconv.Atoi(strings.TrimSuffix(idx, "]"))
			seq, ok := cur.(*ast.SequenceNode)
			if !ok || i >= len(seq.Values) {
				return false
			}
			cur = seq.Values[i]
		}
	}
	return true
}

// shareOf picks round(share% × n) instances (at least one), the same ones for the same seed and rule.
func shareOf(seed uint64, rule, n int, share float64) []int {
	k := max(int(math.Round(share/100*float64(n))), 1)
	perm := rand.New(rand.NewPCG(seed, uint64(rule))).Perm(n)[:k]
	slices.Sort(perm)
	return perm
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
