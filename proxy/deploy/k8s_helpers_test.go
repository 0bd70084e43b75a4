package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/meshproof/meshproof/proxy/config"
)

// manifestDir holds the Kubernetes manifests, relative to this package.
const manifestDir = "k8s"

// bootstrapKey is the ConfigMap key that holds a proxy's Envoy bootstrap.
const bootstrapKey = "bootstrap.yaml"

// proxyContainer is the name every manifest gives the meshproof proxy's container (the native sidecar or
// the edge proxy).
const proxyContainer = "meshproof-proxy"

// drainFlag is the proxy's drain time on SIGTERM (a duration): the graceful drain, then at most as long
// again for the requests in flight (proxy/README.md, "Drain"). Envoy's --drain-time-s is the drain of
// POST /drain_listeners?graceful, which SIGTERM does not use.
const drainFlag = "--drain-time"

// Memory figures the proxy's resources are sized from (proxy/deploy/README.md, "Sizing"): the resident
// set of an idle sidecar (31 MiB measured after start and 200 requests) and the peak of `make bench-proxy`
// (52 MiB at ~18k req/s, proxy/README.md "Performance").
const (
	idleRSS   = 32 << 20
	loadedRSS = 52 << 20
)

// object is one document of a manifest file, decoded into its Kubernetes API type.
type object struct {
	where string // file#index kind/name, for messages
	obj   any    // *corev1.ConfigMap, *corev1.Service, *appsv1.Deployment, *policyv1.PodDisruptionBudget
}

// manifests are the objects of every file of a directory.
type manifests struct {
	objects     []object
	configMaps  map[string]*corev1.ConfigMap
	services    []*corev1.Service
	deployments []*appsv1.Deployment
	pdbs        []*policyv1.PodDisruptionBudget
}

// newObject returns an empty object of the API type of tm, or an error for a kind the manifests do not use.
func newObject(tm metav1.TypeMeta) (any, error) {
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1 Service":
		return &corev1.Service{}, nil
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, nil
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	}
	return nil, fmt.Errorf("apiVersion %q kind %q: not a kind these specs know (ConfigMap, Service, Deployment, PodDisruptionBudget)", tm.APIVersion, tm.Kind)
}

// decodeManifest decodes every document of a multi-document YAML file strictly: an unknown or duplicate
// field, or a value of the wrong type, is an error naming the file and the document's index.
func decodeManifest(file string, data []byte) ([]object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []object
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, i, err)
		}
		js, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, i, err)
		}
		if s := string(bytes.TrimSpace(js)); s == "null" || s == "" {
			continue // only comments
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, i, err)
		}
		obj, err := newObject(tm)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, i, err)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			return nil, fmt.Errorf("%s: document %d (%s): %w", file, i, tm.Kind, err)
		}
		name := obj.(metav1.Object).GetName()
		objs = append(objs, object{where: fmt.Sprintf("%s#%d %s/%s", file, i, tm.Kind, name), obj: obj})
	}
}

// loadManifests decodes every *.yaml file of dir.
func loadManifests(dir string) (*manifests, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no *.yaml under %s", dir)
	}
	m := &manifests{configMaps: map[string]*corev1.ConfigMap{}}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		objs, err := decodeManifest(f, data)
		if err != nil {
			return nil, err
		}
		if len(objs) == 0 {
			return nil, fmt.Errorf("%s: no object", f)
		}
		for _, o := range objs {
			switch v := o.obj.(type) {
			case *corev1.ConfigMap:
				if _, dup := m.configMaps[v.Name]; dup {
					return nil, fmt.Errorf("%s: ConfigMap %q defined twice", o.where, v.Name)
				}
				m.configMaps[v.Name] = v
			case *corev1.Service:
				m.services = append(m.services, v)
			case *appsv1.Deployment:
				m.deployments = append(m.deployments, v)
			case *policyv1.PodDisruptionBudget:
				m.pdbs = append(m.pdbs, v)
			}
		}
		m.objects = append(m.objects, objs...)
	}
	return m, nil
}

// proxyOf returns the Deployment's proxy container and whether it is a native sidecar (an init
// container); nil when the pod has no container named proxyContainer.
func proxyOf(d *appsv1.Deployment) (c *corev1.Container, sidecar bool) {
	spec := &d.Spec.Template.Spec
	for i := range spec.InitContainers {
		if spec.InitContainers[i].Name == proxyContainer {
			return &spec.InitContainers[i], true
		}
	}
	for i := range spec.Containers {
		if spec.Containers[i].Name == proxyContainer {
			return &spec.Containers[i], false
		}
	}
	return nil, false
}

// allContainers returns the pod's init containers, then its containers.
func allContainers(spec *corev1.PodSpec) []*corev1.Container {
	var cs []*corev1.Container
	for i := range spec.InitContainers {
		cs = append(cs, &spec.InitContainers[i])
	}
	for i := range spec.Containers {
		cs = append(cs, &spec.Containers[i])
	}
	return cs
}

// flagValue returns the value of a Go flag among args (-name V, -name=V, --name V, --name=V).
func flagValue(args []string, name string) (string, bool) {
	name = strings.TrimLeft(name, "-")
	for i, a := range args {
		if !strings.HasPrefix(a, "-") {
			continue
		}
		k, v, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if k != name {
			continue
		}
		if hasValue {
			return v, true
		}
		if i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

// dockerfileCmd is the -c path of the image's default CMD in Dockerfile.
func dockerfileCmd(dockerfile string) (string, error) {
	data, err := os.ReadFile(dockerfile)
	if err != nil {
		return "", err
	}
	m := regexp.MustCompile(`(?m)^CMD \["-c", "([^"]+)"\]$`).FindSubmatch(data)
	if m == nil {
		return "", fmt.Errorf(`%s: no CMD ["-c", "PATH"]`, dockerfile)
	}
	return string(m[1]), nil
}

// dockerfileUser is the image's USER in Dockerfile ("" when it has none).
func dockerfileUser(dockerfile string) (string, error) {
	data, err := os.ReadFile(dockerfile)
	if err != nil {
		return "", err
	}
	m := regexp.MustCompile(`(?m)^USER (\S+)$`).FindSubmatch(data)
	if m == nil {
		return "", nil
	}
	return string(m[1]), nil
}

// bootstrapPath is the file the container's proxy reads: its -c argument, else the image's default.
func bootstrapPath(c *corev1.Container, imageDefault string) string {
	if p, ok := flagValue(c.Args, "c"); ok {
		return p
	}
	if p, ok := flagValue(c.Args, "config-path"); ok {
		return p
	}
	return imageDefault
}

// configMapFile resolves a file inside a container to the ConfigMap and key mounted there.
func (m *manifests) configMapFile(spec *corev1.PodSpec, c *corev1.Container, file string) (*corev1.ConfigMap, string, error) {
	for _, vm := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(file, strings.TrimSuffix(vm.MountPath, "/")+"/")
		if vm.SubPath != "" {
			rel, ok = vm.SubPath, file == vm.MountPath
		}
		if !ok {
			continue
		}
		i := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == vm.Name })
		if i < 0 {
			return nil, "", fmt.Errorf("container %s mounts volume %q, which the pod does not declare", c.Name, vm.Name)
		}
		src := spec.Volumes[i].ConfigMap
		if src == nil {
			return nil, "", fmt.Errorf("volume %q mounted at %s is not a ConfigMap", vm.Name, vm.MountPath)
		}
		cm, ok := m.configMaps[src.Name]
		if !ok {
			return nil, "", fmt.Errorf("volume %q names ConfigMap %q, which no manifest defines", vm.Name, src.Name)
		}
		key := rel
		if len(src.Items) > 0 {
			j := slices.IndexFunc(src.Items, func(it corev1.KeyToPath) bool { return it.Path == rel })
			if j < 0 {
				return nil, "", fmt.Errorf("ConfigMap volume %q projects no item at %s", vm.Name, rel)
			}
			key = src.Items[j].Key
		}
		if _, ok := cm.Data[key]; !ok {
			return nil, "", fmt.Errorf("ConfigMap %q has no key %q", cm.Name, key)
		}
		return cm, key, nil
	}
	return nil, "", fmt.Errorf("container %s: nothing is mounted at %s", c.Name, file)
}

// containerPort resolves a probe's or a Service's port (a number or a port name) among a container's ports.
func containerPort(c *corev1.Container, p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("container %s has no port named %q", c.Name, p.StrVal)
}

// hostPort splits a host:port address.
func hostPort(addr string) (netip.Addr, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	ip, err := netip.ParseAddr(h)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	port, err := strconv.Atoi(p)
	return ip, port, err
}

// reachableFromPod reports whether a listen address takes connections to the pod's IP (the kubelet's
// probes and Services connect there): an unspecified or non-loopback address.
func reachableFromPod(addr string) bool {
	ip, _, err := hostPort(addr)
	return err == nil && !ip.IsLoopback()
}

// listenerOn returns the bootstrap's static listener on port, if any.
func listenerOn(b *config.Bootstrap, port int) *config.Listener {
	for i := range b.Listeners {
		if _, p, err := hostPort(b.Listeners[i].Address); err == nil && p == port {
			return &b.Listeners[i]
		}
	}
	return nil
}

// routeFor returns the route of the listener's catch-all virtual host that a GET of urlPath takes (path
// and prefix matches only: a route with header or query matchers fails the spec).
func routeFor(l *config.Listener, urlPath string) (*config.Route, error) {
	for _, vh := range l.Routes.VirtualHosts {
		if !slices.Contains(vh.Domains, "*") {
			continue
		}
		for i := range vh.Routes {
			r := &vh.Routes[i]
			mt := r.Match
			if mt.Regex != nil || mt.Separated || mt.IgnoreCase || len(mt.Headers) > 0 || len(mt.QueryParameters) > 0 {
				return nil, fmt.Errorf("listener %s: route %d has a match these specs do not evaluate", l.Name, i)
			}
			if (mt.IsPath && mt.Path == urlPath) || (!mt.IsPath && strings.HasPrefix(urlPath, mt.Prefix)) {
				return r, nil
			}
		}
	}
	return nil, fmt.Errorf("listener %s: no route of a virtual host with domain \"*\" takes %s", l.Name, urlPath)
}

// servesAdmin checks that an HTTP GET of urlPath on the pod's port reaches the bootstrap's admin interface
// with that path: the admin listens there on an address the pod's IP reaches, or a listener there routes
// the path unchanged to a cluster whose only endpoint is the admin.
func servesAdmin(b *config.Bootstrap, port int, urlPath string) error {
	if b.Admin == nil {
		return errors.New("the bootstrap has no admin interface")
	}
	if _, p, err := hostPort(b.Admin.Address); err == nil && p == port {
		if !reachableFromPod(b.Admin.Address) {
			return fmt.Errorf("port %d is the admin's, which listens on %s: the kubelet connects to the pod's IP", port, b.Admin.Address)
		}
		return nil
	}
	l := listenerOn(b, port)
	if l == nil {
		return fmt.Errorf("neither the admin (%s) nor a listener is on port %d", b.Admin.Address, port)
	}
	if !reachableFromPod(l.Address) {
		return fmt.Errorf("listener %s on port %d listens on %s, which the pod's IP does not reach", l.Name, port, l.Address)
	}
	r, err := routeFor(l, urlPath)
	if err != nil {
		return err
	}
	if r.DirectResponse != nil || r.Redirect != nil {
		return fmt.Errorf("listener %s answers %s itself", l.Name, urlPath)
	}
	if r.Action.PrefixRewrite != "" || r.Action.RegexRewrite != nil {
		return fmt.Errorf("listener %s rewrites %s", l.Name, urlPath)
	}
	i := slices.IndexFunc(b.Clusters, func(c config.Cluster) bool { return c.Name == r.Action.Cluster })
	if i < 0 {
		return fmt.Errorf("listener %s routes %s to cluster %q, which is not static", l.Name, urlPath, r.Action.Cluster)
	}
	eps := b.Clusters[i].Endpoints
	if len(eps) != 1 || eps[0].Address != b.Admin.Address {
		return fmt.Errorf("listener %s routes %s to cluster %q (%v), not to the admin alone (%s)", l.Name, urlPath, r.Action.Cluster, eps, b.Admin.Address)
	}
	return nil
}

// selects reports whether a Service's selector picks the Deployment's pods.
func selects(s *corev1.Service, d *appsv1.Deployment) bool {
	return len(s.Spec.Selector) > 0 && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels))
}

// serviceAt returns the Service whose cluster IP and port are addr, if any.
func (m *manifests) serviceAt(addr string) (*corev1.Service, *corev1.ServicePort) {
	ip, port, err := hostPort(addr)
	if err != nil {
		return nil, nil
	}
	for _, s := range m.services {
		if s.Spec.ClusterIP != ip.String() {
			continue
		}
		for i := range s.Spec.Ports {
			if int(s.Spec.Ports[i].Port) == port {
				return s, &s.Spec.Ports[i]
			}
		}
	}
	return nil, nil
}

// goMemLimit parses a GOMEMLIMIT value (bytes with an optional B, KiB, MiB, GiB or TiB suffix).
func goMemLimit(v string) (int64, error) {
	units := []struct {
		suffix string
		shift  uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}
	for _, u := range units {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			x, err := strconv.ParseInt(n, 10, 64)
			return x << u.shift, err
		}
	}
	return strconv.ParseInt(v, 10, 64)
}

// env returns a container's environment variable's literal value.
func env(c *corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom == nil {
			return e.Value, true
		}
	}
	return "", false
}

// bootstrapName names a ConfigMap's bootstrap in the proxy's errors.
func bootstrapName(cm *corev1.ConfigMap, key string) string {
	return path.Join(manifestDir, "configmap", cm.Name, key)
}
