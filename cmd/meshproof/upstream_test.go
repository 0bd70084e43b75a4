package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/cmd/internal/cli"
	"github.com/meshproof/meshproof/mesh/docker"
	"github.com/meshproof/meshproof/scenarios"
)

var _ = Describe("meshproof upstream", func() {
	const scenario = "../../scenarios/examples/retries-mask-failing-instance.yaml" // checkout/3 aborts 50% with 503

	post := func(u string) (int, string) {
		GinkgoHelper()
		resp, err := http.Post(u, "", nil)
		Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	get := func(u string) (int, string) {
		GinkgoHelper()
		resp, err := http.Get(u)
		Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	It("serves one instance of a scenario and reports it on its control port until interrupted", func() {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var stdout, stderr syncBuffer
		done := make(chan int)
		go func() {
			done <- Main(ctx, []string{"upstream", "--scenario", scenario, "--service", "checkout", "--instance", "3",
				"--seed", "11", "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0"}, &stdout, &stderr)
		}()
		addrs := regexp.MustCompile(`upstream checkout/3 on (\S+)\ncontrol on (\S+)\n`)
		Eventually(stdout.String).WithTimeout(10 * time.Second).Should(MatchRegexp(addrs.String()))
		m := addrs.FindStringSubmatch(stdout.String())
		data, control := "http://"+m[1], "http://"+m[2]

		code, body := get(control + docker.PathReady)
		Expect(code).To(Equal(http.StatusOK))
		Expect(body).To(Equal("READY\n"))
		code, body = post(control + docker.PathStart + "?at=now")
		Expect(code).To(Equal(http.StatusOK), body)

		statuses := map[int]uint64{}
		for range 40 {
			code, _ := get(data + "/")
			statuses[code]++
		}
		Expect(statuses).To(HaveKey(503))
		Expect(statuses).To(HaveKey(200))

		code, body = get(control + docker.PathRecord)
		Expect(code).To(Equal(http.StatusOK))
		var rep docker.UpstreamReport
		Expect(json.Unmarshal([]byte(body), &rep)).To(Succeed())
		Expect(rep.Service).To(Equal("checkout"))
		Expect(rep.Instance).To(Equal(3))
		Expect(rep.Stats.Requests).To(Equal(uint64(40)))
		Expect(rep.Stats.Statuses).To(Equal(statuses))
		Expect(rep.Stats.Applied).To(Equal(map[string]uint64{"faults[0]/abort": statuses[503]}))
		Expect(rep.Events).To(HaveLen(int(statuses[503])))
		Expect(rep.Events[0]).To(And(HaveField("Fault", "faults[0]"), HaveField("Kind", "abort"), HaveField("Detail", "503")))

		cancel()
		Eventually(done).WithTimeout(10 * time.Second).Should(Receive(Equal(cli.ExitOK)))
		Expect(stderr.String()).To(BeEmpty())
	})

	It("draws the same fault decisions for the same seed", func() {
		run := func() map[int]uint64 {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var stdout, stderr syncBuffer
			done := make(chan int)
			go func() {
				done <- Main(ctx, []string{"upstream", "--scenario", scenario, "--service", "checkout", "--instance", "3",
					"--seed", "5", "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0"}, &stdout, &stderr)
			}()
			Eventually(stdout.String).WithTimeout(10 * time.Second).Should(ContainSubstring("control on"))
			data := "http://" + regexp.MustCompile(`on (\S+)\n`).FindStringSubmatch(stdout.String())[1]
			var seq []int
			for range 20 {
				code, _ := get(data + "/")
				seq = append(seq, code)
			}
			cancel()
			Eventually(done).WithTimeout(10 * time.Second).Should(Receive(Equal(cli.ExitOK)))
			out := map[int]uint64{}
			for i, c := range seq {
				out[i] = uint64(c)
			}
			return out
		}
		Expect(run()).To(Equal(run()))
	})

	Context("of a service that calls others", func() {
		// cart calls payments through its sidecar, which retries 5xx twice; payments fails every request.
		const pod = `name: pod
seed: 1
services:
  cart: {instances: 1, calls: [{service: payments, path: /pay}]}
  payments: {instances: 1}
proxies:
  edge: {routes_to: cart}
sidecars:
  route: {retry_policy: {retry_on: 5xx, num_retries: 2}}
load: {target: edge, rate: 1/s, duration: 1s}
faults:
  - {service: payments, abort: {status: 503}}
`
		var file string
		BeforeEach(func() {
			file = filepath.Join(GinkgoT().TempDir(), "pod.yaml")
			Expect(os.WriteFile(file, []byte(pod), 0o644)).To(Succeed())
		})
		// start runs an instance until the spec ends and returns its stdout once it listens.
		start := func(args ...string) *syncBuffer {
			GinkgoHelper()
			ctx, cancel := context.WithCancel(context.Background())
			var stdout, stderr syncBuffer
			done := make(chan int)
			go func() {
				done <- Main(ctx, append([]string{"upstream", "--scenario", file, "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0"}, args...), &stdout, &stderr)
			}()
			DeferCleanup(func() {
				cancel()
				Eventually(done).WithTimeout(10 * time.Second).Should(Receive(Equal(cli.ExitOK)))
				Expect(stderr.String()).To(BeEmpty())
			})
			Eventually(stdout.String).WithTimeout(10 * time.Second).Should(ContainSubstring("control on"))
			return &stdout
		}
		addr := func(out *syncBuffer, what string) string {
			GinkgoHelper()
			m := regexp.MustCompile(what + ` on (\S+?)[,\n]`).FindStringSubmatch(out.String())
			Expect(m).NotTo(BeNil(), "%q in %q", what, out.String())
			return m[1]
		}

		It("runs its outbound sidecar in its process, and reports its calls with their attempts and the sidecar's stats", func() {
			payments := start("--service", "payments")
			sc, err := scenarios.LoadFile(file)
			Expect(err).NotTo(HaveOccurred())
			b, err := scenarios.SidecarBootstrap(sc, "cart", scenarios.SidecarAddresses{Listener: "127.0.0.1:0", Admin: "127.0.0.1:0",
				Endpoints: map[string][]string{"payments": {addr(payments, "upstream payments/0")}}})
			Expect(err).NotTo(HaveOccurred())
			data, err := docker.BootstrapJSON(b)
			Expect(err).NotTo(HaveOccurred())
			sidecar := filepath.Join(GinkgoT().TempDir(), "sidecar.yaml")
			Expect(os.WriteFile(sidecar, data, 0o644)).To(Succeed())

			cart := start("--service", "cart", "--sidecar", sidecar)
			Eventually(cart.String).Should(MatchRegexp(`sidecar on 127\.0\.0\.1:\d+, admin on 127\.0\.0\.1:\d+\n`))
			control := "http://" + addr(cart, "control")
			code, body := post(control + docker.PathStart + "?at=now")
			Expect(code).To(Equal(http.StatusOK), body)
			code, _ = get("http://" + addr(cart, "upstream cart/0") + "/")
			Expect(code).To(Equal(503), "cart answers 503 when its call failed")

			_, body = get(control + docker.PathRecord)
			var rep docker.UpstreamReport
			Expect(json.Unmarshal([]byte(body), &rep)).To(Succeed())
			Expect(rep.Calls).To(HaveLen(1))
			Expect(rep.Calls[0]).To(And(HaveField("Callee", "payments"), HaveField("Path", "/pay"), HaveField("Status", 503),
				HaveField("Attempts", 3), HaveField("AttemptsKnown", true)), "the sidecar's attempts, joined by x-request-id")
			Expect(rep.Stats.Calls).To(Equal(uint64(1)))
			Expect(rep.Stats.CallFailures).To(Equal(uint64(1)))
			Expect(rep.Stats.Received).NotTo(BeEmpty(), "the arrivals per 100ms from the run start")
			Expect(rep.SidecarCounters).To(HaveKeyWithValue("cluster.payments.upstream_rq_retry", uint64(2)))
			Expect(rep.SidecarGauges).To(HaveKeyWithValue("cluster.payments.membership_total", uint64(1)), "gauges apart from counters")
		})

		It("exits 2 without a sidecar, or with one for a service that calls none", func() {
			var stdout, stderr syncBuffer
			Expect(Main(context.Background(), []string{"upstream", "--scenario", file, "--service", "cart"}, &stdout, &stderr)).To(Equal(cli.ExitInvalid))
			Expect(stderr.String()).To(ContainSubstring("service cart calls payments: --sidecar BOOTSTRAP is required"))
			var stderr2 syncBuffer
			Expect(Main(context.Background(), []string{"upstream", "--scenario", file, "--service", "payments", "--sidecar", file}, &stdout, &stderr2)).To(Equal(cli.ExitInvalid))
			Expect(stderr2.String()).To(ContainSubstring("--sidecar: service payments calls no other service"))
		})
	})

	DescribeTable("exits 2 on invalid input, saying what is accepted",
		func(args []string, want string) {
			var stdout, stderr syncBuffer
			code := Main(context.Background(), append([]string{"upstream"}, args...), &stdout, &stderr)
			Expect(code).To(Equal(cli.ExitInvalid))
			Expect(stderr.String()).To(ContainSubstring(want))
		},
		Entry("no scenario", []string{"--service", "checkout"}, "usage: meshproof upstream --scenario FILE --service S --instance I"),
		Entry("no service", []string{"--scenario", scenario}, "usage: meshproof upstream"),
		Entry("unknown service", []string{"--scenario", scenario, "--service", "cart"}, `--service "cart": want one of the services of `+scenario+" (checkout)"),
		Entry("instance out of range", []string{"--scenario", scenario, "--service", "checkout", "--instance", "4"}, "--instance 4: service checkout has instances 0 to 3"),
		Entry("bad seed", []string{"--scenario", scenario, "--service", "checkout", "--seed", "-1"}, `--seed "-1": want a non-negative integer`),
		Entry("unreadable scenario", []string{"--scenario", "testdata/nope.yaml", "--service", "checkout"}, "nope.yaml"),
	)

	It("is listed in the help", func() {
		var stdout, stderr syncBuffer
		Expect(Main(context.Background(), []string{"help"}, &stdout, &stderr)).To(Equal(cli.ExitOK))
		Expect(strings.Contains(stdout.String(), "meshproof upstream --scenario FILE")).To(BeTrue())
	})
})
