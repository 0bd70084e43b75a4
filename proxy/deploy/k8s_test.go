package deploy_test

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshproof/meshproof/proxy/config"
)

var _ = Describe("the Kubernetes manifests", func() {
	var (
		m            *manifests
		imageDefault string // the image's default bootstrap path (Dockerfile CMD)
	)

	BeforeEach(func() {
		var err error
		m, err = loadManifests(manifestDir)
		Expect(err).NotTo(HaveOccurred())
		imageDefault, err = dockerfileCmd("Dockerfile")
		Expect(err).NotTo(HaveOccurred())
	})

	// bootstrapOf loads the bootstrap a container reads with the proxy's own decoder.
	bootstrapOf := func(d *appsv1.Deployment, c *corev1.Container) *config.Bootstrap {
		GinkgoHelper()
		cm, key, err := m.configMapFile(&d.Spec.Template.Spec, c, bootstrapPath(c, imageDefault))
		Expect(err).NotTo(HaveOccurred(), "Deployment %s", d.Name)
		b, _, err := config.ParseBootstrap([]byte(cm.Data[key]), bootstrapName(cm, key))
		Expect(err).NotTo(HaveOccurred(), "Deployment %s, container %s", d.Name, c.Name)
		return b
	}

	// eachProxy runs check on every Deployment's proxy container, with its bootstrap.
	eachProxy := func(check func(d *appsv1.Deployment, c *corev1.Container, sidecar bool, b *config.Bootstrap)) {
		GinkgoHelper()
		Expect(m.deployments).NotTo(BeEmpty())
		for _, d := range m.deployments {
			c, sidecar := proxyOf(d)
			Expect(c).NotTo(BeNil(), "Deployment %s has no container named %s", d.Name, proxyContainer)
			check(d, c, sidecar, bootstrapOf(d, c))
		}
	}

	Describe("decoding", func() {
		It("decodes every document strictly into its Kubernetes API type", func() {
			var kinds []string
			for _, o := range m.objects {
				kinds = append(kinds, strings.Fields(o.where)[1])
			}
			Expect(kinds).To(ConsistOf(
				"ConfigMap/meshproof-demo-sidecar", "ConfigMap/meshproof-demo-app", "Deployment/meshproof-demo", "Service/meshproof-demo",
				"ConfigMap/meshproof-edge", "Deployment/meshproof-edge", "Service/meshproof-edge", "PodDisruptionBudget/meshproof-edge",
				"ConfigMap/meshproof-edge-xds", "Service/meshproof-xds", "Deployment/meshproof-edge-xds",
			))
		})

		DescribeTable("rejects what the API server would not take",
			func(doc, want string) {
				_, err := decodeManifest("bad.yaml", []byte(doc))
				Expect(err).To(MatchError(ContainSubstring(want)))
			},
			Entry("an unknown field", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      initContainers:\n      - {name: p, image: i, restartPolicyy: Always}\n",
				`unknown field "restartPolicyy"`),
			Entry("a duplicate field", "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {clusterIP: 10.96.0.1, clusterIP: 10.96.0.2}\n",
				`key "clusterIP" already set in map`),
			Entry("a value of the wrong type", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {bootstrap.yaml: [1]}\n",
				`cannot unmarshal array`),
			Entry("a kind the specs do not know", "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n",
				`kind "Pod": not a kind these specs know`),
		)
	})

	Describe("bootstraps", func() {
		It("loads every ConfigMap's bootstrap with the proxy's own decoder", func() {
			n := 0
			for _, cm := range m.configMaps {
				data, ok := cm.Data[bootstrapKey]
				Expect(ok).To(BeTrue(), "ConfigMap %s has no %s", cm.Name, bootstrapKey)
				_, _, err := config.ParseBootstrap([]byte(data), bootstrapName(cm, bootstrapKey))
				Expect(err).NotTo(HaveOccurred())
				n++
			}
			Expect(n).To(Equal(4))
		})

		It("fails a bootstrap the proxy would reject, by its field path", func() {
			cm := m.configMaps["meshproof-edge"]
			// The first cluster's connect_timeout, followed by a field of Cluster that meshproof does not implement.
			bad := regexp.MustCompile(`(?m)^( *)connect_timeout: 1s$`).ReplaceAllString(cm.Data[bootstrapKey], "${0}\n${1}dns_lookup_family: V4_ONLY")
			Expect(bad).NotTo(Equal(cm.Data[bootstrapKey]))
			_, _, err := config.ParseBootstrap([]byte(bad), bootstrapName(cm, bootstrapKey))
			var cerr *config.Error
			Expect(errors.As(err, &cerr)).To(BeTrue(), "%v", err)
			Expect(err).To(MatchError(ContainSubstring("static_resources.clusters[0].dns_lookup_family")))
		})

		It("keeps the admin interface on loopback and reads the file the ConfigMap is mounted as", func() {
			eachProxy(func(d *appsv1.Deployment, c *corev1.Container, _ bool, b *config.Bootstrap) {
				Expect(b.Admin).NotTo(BeNil(), "Deployment %s", d.Name)
				Expect(reachableFromPod(b.Admin.Address)).To(BeFalse(), "Deployment %s: admin on %s", d.Name, b.Admin.Address)
				Expect(bootstrapPath(c, imageDefault)).To(Equal(imageDefault), "Deployment %s: the image's default path", d.Name)
				Expect(c.Image).To(HavePrefix("meshproof-proxy:"), "Deployment %s", d.Name)
			})
		})

		It("names every non-loopback upstream by the cluster IP and port of a Service of the manifests", func() {
			n := 0
			eachProxy(func(d *appsv1.Deployment, _ *corev1.Container, _ bool, b *config.Bootstrap) {
				for _, cl := range b.Clusters {
					for _, ep := range cl.Endpoints {
						if !reachableFromPod(ep.Address) {
							continue
						}
						s, _ := m.serviceAt(ep.Address)
						Expect(s).NotTo(BeNil(), "Deployment %s: cluster %s endpoint %s is no Service's cluster IP and port", d.Name, cl.Name, ep.Address)
						n++
					}
				}
			})
			Expect(n).To(Equal(2)) // the edge's demo cluster, the xDS variant's control plane
		})

		It("points the xDS variant's ADS stream at the control plane Service over h2c, with a node", func() {
			var found int
			eachProxy(func(d *appsv1.Deployment, _ *corev1.Container, _ bool, b *config.Bootstrap) {
				if b.Dynamic == nil {
					return
				}
				found++
				Expect(b.Node).NotTo(BeNil(), "Deployment %s", d.Name)
				Expect(b.Node.ID).NotTo(BeEmpty(), "Deployment %s", d.Name)
				Expect(b.Dynamic.CDS).NotTo(BeNil())
				Expect(b.Dynamic.LDS).NotTo(BeNil())
				var ads *config.Cluster
				for i := range b.Clusters {
					if b.Clusters[i].Name == b.Dynamic.ADSCluster {
						ads = &b.Clusters[i]
					}
				}
				Expect(ads).NotTo(BeNil())
				Expect(ads.Endpoints).To(HaveLen(1))
				s, p := m.serviceAt(ads.Endpoints[0].Address)
				Expect(s).NotTo(BeNil(), "Deployment %s: the ADS cluster %s is no Service", d.Name, ads.Endpoints[0].Address)
				Expect(s.Name).To(Equal("meshproof-xds"))
				Expect(p.AppProtocol).To(HaveValue(Equal("kubernetes.io/h2c")))
			})
			Expect(found).To(Equal(1))
		})
	})

	Describe("Deployments", func() {
		It("runs the proxy as a native sidecar (an init container restarted always) or as the edge's container", func() {
			roles := map[string]bool{}
			eachProxy(func(d *appsv1.Deployment, c *corev1.Container, sidecar bool, _ *config.Bootstrap) {
				roles[d.Name] = sidecar
				if sidecar {
					Expect(c.RestartPolicy).To(HaveValue(Equal(corev1.ContainerRestartPolicyAlways)), "Deployment %s", d.Name)
					Expect(d.Spec.Template.Spec.Containers).NotTo(BeEmpty(), "Deployment %s: a sidecar needs an app", d.Name)
					Expect(c.StartupProbe).NotTo(BeNil(), "Deployment %s: the app starts once the sidecar's startupProbe passed", d.Name)
				} else {
					Expect(c.RestartPolicy).To(BeNil())
				}
				Expect(labels.SelectorFromSet(d.Spec.Selector.MatchLabels).Matches(labels.Set(d.Spec.Template.Labels))).To(BeTrue(), "Deployment %s selects its own pods", d.Name)
			})
			Expect(roles).To(Equal(map[string]bool{"meshproof-demo": true, "meshproof-edge": false, "meshproof-edge-xds": false}))
		})

		It("probes /ready on a port that reaches the bootstrap's admin interface", func() {
			eachProxy(func(d *appsv1.Deployment, c *corev1.Container, _ bool, b *config.Bootstrap) {
				Expect(c.ReadinessProbe).NotTo(BeNil(), "Deployment %s", d.Name)
				Expect(c.StartupProbe).NotTo(BeNil(), "Deployment %s", d.Name)
				Expect(c.LivenessProbe).To(BeNil(), "Deployment %s: /ready answers 503 while draining; a liveness probe on it would restart a draining proxy", d.Name)
				for _, p := range []*corev1.Probe{c.ReadinessProbe, c.StartupProbe} {
					g := p.HTTPGet
					Expect(g).NotTo(BeNil(), "Deployment %s", d.Name)
					Expect(g.Path).To(Equal("/ready"))
					Expect(g.Host).To(BeEmpty(), "the pod's IP")
					Expect(g.Scheme).To(Or(BeEmpty(), Equal(corev1.URISchemeHTTP)))
					port, err := containerPort(c, g.Port)
					Expect(err).NotTo(HaveOccurred())
					Expect(servesAdmin(b, port, g.Path)).To(Succeed(), "Deployment %s: probe on port %d", d.Name, port)
				}
			})
		})

		It("declares only ports the bootstrap's listeners take on the pod's address", func() {
			eachProxy(func(d *appsv1.Deployment, c *corev1.Container, _ bool, b *config.Bootstrap) {
				Expect(c.Ports).NotTo(BeEmpty())
				for _, p := range c.Ports {
					l := listenerOn(b, int(p.ContainerPort))
					Expect(l).NotTo(BeNil(), "Deployment %s: port %s %d has no listener", d.Name, p.Name, p.ContainerPort)
					Expect(reachableFromPod(l.Address)).To(BeTrue(), "Deployment %s: listener %s on %s", d.Name, l.Name, l.Address)
				}
			})
		})

		It("sleeps in preStop (no shell in the image) and gives the drain its time before SIGKILL", func() {
			eachProxy(func(d *appsv1.Deployment, c *corev1.Container, _ bool, _ *config.Bootstrap) {
				spec := &d.Spec.Template.Spec
				v, ok := flagValue(c.Args, drainFlag)
				Expect(ok).To(BeTrue(), "Deployment %s: %s set", d.Name, drainFlag)
				d8n, err := time.ParseDuration(v)
				Expect(err).NotTo(HaveOccurred())
				Expect(d8n).To(BeNumerically(">", 0))
				// SIGTERM: the drain, then up to as long again for the requests in flight.
				drain := 2 * int64(math.Ceil(d8n.Seconds()))
				// The pod's containers stop first (their preStop, then SIGTERM), then a native sidecar (its
				// preStop, then SIGTERM and the drain): all within the pod's grace period.
				var sleeps int64
				for _, k := range allContainers(spec) {
					Expect(k.Lifecycle).NotTo(BeNil(), "Deployment %s, container %s", d.Name, k.Name)
					h := k.Lifecycle.PreStop
					Expect(h).NotTo(BeNil(), "Deployment %s, container %s", d.Name, k.Name)
					Expect(h.Exec).To(BeNil(), "Deployment %s, container %s: FROM scratch, nothing to exec", d.Name, k.Name)
					Expect(h.Sleep).NotTo(BeNil(), "Deployment %s, container %s", d.Name, k.Name)
					Expect(h.Sleep.Seconds).To(BeNumerically(">", 0))
					sleeps += h.Sleep.Seconds
				}
				Expect(spec.TerminationGracePeriodSeconds).NotTo(BeNil(), "Deployment %s", d.Name)
				Expect(*spec.TerminationGracePeriodSeconds).To(BeNumerically(">=", sleeps+drain),
					"Deployment %s: preStop sleeps %d s + twice the drain time, %d s", d.Name, sleeps, drain)
			})
		})

		It("runs every container as a numeric non-root user, read-only, without privileges or capabilities", func() {
			user, err := dockerfileUser("Dockerfile")
			Expect(err).NotTo(HaveOccurred())
			Expect(user).NotTo(BeEmpty(), "the image runs as a non-root user by default too")
			for _, d := range m.deployments {
				spec := &d.Spec.Template.Spec
				Expect(spec.SecurityContext).NotTo(BeNil(), "Deployment %s", d.Name)
				Expect(spec.SecurityContext.SeccompProfile).To(HaveValue(HaveField("Type", corev1.SeccompProfileTypeRuntimeDefault)))
				Expect(spec.AutomountServiceAccountToken).To(HaveValue(BeFalse()), "Deployment %s: the proxy talks to no API server", d.Name)
				for _, c := range allContainers(spec) {
					sc := c.SecurityContext
					where := d.Name + "/" + c.Name
					Expect(sc).NotTo(BeNil(), where)
					Expect(sc.RunAsNonRoot).To(HaveValue(BeTrue()), where)
					Expect(sc.RunAsUser).To(HaveValue(BeNumerically(">", 0)), where+": numeric (the image has no /etc/passwd)")
					Expect(sc.RunAsGroup).NotTo(BeNil(), where)
					Expect(fmt.Sprintf("%d:%d", *sc.RunAsUser, *sc.RunAsGroup)).To(Equal(user), where+": the image's USER")
					Expect(sc.ReadOnlyRootFilesystem).To(HaveValue(BeTrue()), where)
					Expect(sc.AllowPrivilegeEscalation).To(HaveValue(BeFalse()), where)
					Expect(sc.Privileged).To(Or(BeNil(), HaveValue(BeFalse())), where)
					Expect(sc.Capabilities).NotTo(BeNil(), where)
					Expect(sc.Capabilities.Drop).To(ContainElement(corev1.Capability("ALL")), where)
					Expect(sc.Capabilities.Add).To(BeEmpty(), where)
				}
			}
		})

		It("sizes the proxy's memory from measured figures and keeps GOMEMLIMIT under the limit", func() {
			eachProxy(func(d *appsv1.Deployment, c *corev1.Container, _ bool, _ *config.Bootstrap) {
				r := c.Resources
				Expect(r.Requests).To(HaveKey(corev1.ResourceCPU), "Deployment %s", d.Name)
				Expect(r.Requests).To(HaveKey(corev1.ResourceMemory), "Deployment %s", d.Name)
				Expect(r.Limits).To(HaveKey(corev1.ResourceMemory), "Deployment %s", d.Name)
				req, lim := r.Requests[corev1.ResourceMemory], r.Limits[corev1.ResourceMemory]
				Expect(req.Value()).To(BeNumerically(">=", idleRSS), "Deployment %s: request %s", d.Name, req.String())
				Expect(lim.Value()).To(BeNumerically(">=", 2*loadedRSS), "Deployment %s: limit %s", d.Name, lim.String())
				Expect(req.Cmp(lim)).To(BeNumerically("<=", 0))
				v, ok := env(c, "GOMEMLIMIT")
				Expect(ok).To(BeTrue(), "Deployment %s", d.Name)
				soft, err := goMemLimit(v)
				Expect(err).NotTo(HaveOccurred())
				Expect(soft).To(BeNumerically(">", req.Value()))
				Expect(soft).To(BeNumerically("<", lim.Value()))
			})
			for _, d := range m.deployments {
				for _, c := range allContainers(&d.Spec.Template.Spec) {
					for name, q := range c.Resources.Requests {
						if l, ok := c.Resources.Limits[name]; ok {
							Expect(q.Cmp(l)).To(BeNumerically("<=", 0), "%s/%s %s", d.Name, c.Name, name)
						}
					}
					Expect(c.Resources.Limits).To(HaveKey(corev1.ResourceMemory), "%s/%s", d.Name, c.Name)
				}
			}
		})
	})

	Describe("Services", func() {
		It("select a Deployment of the manifests and target a port its proxy listens on, or are the control plane's", func() {
			for _, s := range m.services {
				var ds []*appsv1.Deployment
				for _, d := range m.deployments {
					if selects(s, d) {
						ds = append(ds, d)
					}
				}
				if s.Name == "meshproof-xds" {
					Expect(ds).To(BeEmpty(), "the control plane is not part of the manifests")
					continue
				}
				Expect(ds).To(HaveLen(1), "Service %s", s.Name)
				d := ds[0]
				c, _ := proxyOf(d)
				b := bootstrapOf(d, c)
				for _, p := range s.Spec.Ports {
					port, err := containerPort(c, p.TargetPort)
					Expect(err).NotTo(HaveOccurred(), "Service %s", s.Name)
					l := listenerOn(b, port)
					Expect(l).NotTo(BeNil(), "Service %s: port %d", s.Name, port)
					Expect(l.Name).NotTo(Equal("health"))
				}
			}
		})

		It("keep the edge available through voluntary disruptions", func() {
			Expect(m.pdbs).To(HaveLen(1))
			pdb := m.pdbs[0]
			var edge *appsv1.Deployment
			for _, d := range m.deployments {
				if d.Name == "meshproof-edge" {
					edge = d
				}
			}
			Expect(edge).NotTo(BeNil())
			Expect(labels.SelectorFromSet(pdb.Spec.Selector.MatchLabels).Matches(labels.Set(edge.Spec.Template.Labels))).To(BeTrue())
			Expect(pdb.Spec.MaxUnavailable).NotTo(BeNil())
			Expect(pdb.Spec.MaxUnavailable.IntValue()).To(BeNumerically("<", int(*edge.Spec.Replicas)))
		})
	})
})
