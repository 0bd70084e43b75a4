package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/mesh/docker"
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
		Eventually(done).WithTimeout(10 * time.Second).Should(Receive(Equal(exitOK)))
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
			Eventually(done).WithTimeout(10 * time.Second).Should(Receive(Equal(exitOK)))
			out := map[int]uint64{}
			for i, c := range seq {
				out[i] = uint64(c)
			}
			return out
		}
		Expect(run()).To(Equal(run()))
	})

	DescribeTable("exits 2 on invalid input, saying what is accepted",
		func(args []string, want string) {
			var stdout, stderr syncBuffer
			code := Main(context.Background(), append([]string{"upstream"}, args...), &stdout, &stderr)
			Expect(code).To(Equal(exitInvalid))
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
		Expect(Main(context.Background(), []string{"help"}, &stdout, &stderr)).To(Equal(exitOK))
		Expect(strings.Contains(stdout.String(), "meshproof upstream --scenario FILE")).To(BeTrue())
	})
})
