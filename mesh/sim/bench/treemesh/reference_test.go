package treemesh_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/mesh/sim/bench/treemesh"
)

// The SimPy reference (../reference.py) must read what the generator writes: run it on a small mesh.
var _ = Describe("the SimPy reference", func() {
	const python = "/usr/bin/python3"
	var reference string

	BeforeEach(func() {
		if err := exec.Command(python, "-c", "import simpy, yaml; assert int(simpy.__version__.split('.')[0]) >= 3").Run(); err != nil {
			Skip("no SimPy 3 and PyYAML for " + python + " (apt-get install python3-simpy3 python3-yaml)")
		}
		var err error
		reference, err = filepath.Abs("../reference.py")
		Expect(err).NotTo(HaveOccurred())
	})

	run := func(file string, args ...string) (map[string]any, string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, python, append(append([]string{reference}, args...), file)...)
		var stderr []byte
		out, err := cmd.Output()
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		res := map[string]any{}
		if err == nil {
			Expect(json.Unmarshal(out, &res)).To(Succeed())
		}
		return res, string(stderr), err
	}

	It("runs a healthy generated mesh: every client request makes the whole tree of attempts", func() {
		p := treemesh.Params{Services: 13, Instances: 3, Fanout: 2, Depth: 4, Rate: 50, Duration: 2 * time.Second,
			Seed: 5, Lognormal: true}
		data, sum, err := treemesh.Generate(p)
		Expect(err).NotTo(HaveOccurred())
		file := filepath.Join(GinkgoT().TempDir(), "mesh.yaml")
		Expect(os.WriteFile(file, data, 0o644)).To(Succeed())

		res, stderr, err := run(file)
		Expect(err).NotTo(HaveOccurred(), stderr)
		Expect(res["client_requests"]).To(BeNumerically("==", 100))
		Expect(res["success_rate"]).To(BeNumerically("==", 1))
		Expect(res["upstream_attempts"]).To(BeNumerically("==", 100*sum.AttemptsPerRequest), "15 per client request, no retry")
		Expect(res["attempts_per_wall_second"]).To(BeNumerically(">", 0))

		res, stderr, err = run(file, "--seconds", "1")
		Expect(err).NotTo(HaveOccurred(), stderr)
		Expect(res["client_requests"]).To(BeNumerically("==", 50), "--seconds 1 runs the load's first second")
	})

	It("retries the faulty instances' 503s and ejects the bad one", func() {
		p := treemesh.Params{Services: 13, Instances: 3, Fanout: 2, Depth: 4, Rate: 100, Duration: 20 * time.Second,
			Seed: 5, Faults: true, Lognormal: true}
		data, sum, err := treemesh.Generate(p)
		Expect(err).NotTo(HaveOccurred())
		file := filepath.Join(GinkgoT().TempDir(), "mesh.yaml")
		Expect(os.WriteFile(file, data, 0o644)).To(Succeed())

		res, stderr, err := run(file)
		Expect(err).NotTo(HaveOccurred(), stderr)
		Expect(res["ejections"]).To(BeNumerically(">", 0), "the instance failing every request from 4 s to 6 s")
		Expect(res["attempts_per_client_request"]).To(BeNumerically(">", sum.AttemptsPerRequest), "retries add attempts")
		Expect(res["success_rate"]).To(BeNumerically(">", 0.95))
	})

	It("refuses what it does not model, naming the file, line and field", func() {
		file := filepath.Join(GinkgoT().TempDir(), "capacity.yaml")
		Expect(os.WriteFile(file, []byte("name: x\nservices:\n  a:\n    instances: 1\n    capacity: {workers: 1}\nproxies: {edge: {routes_to: a}}\nload: {target: edge, rate: 1/s, duration: 1s}\n"), 0o644)).To(Succeed())
		_, stderr, err := run(file)
		Expect(err).To(HaveOccurred())
		Expect(err.(*exec.ExitError).ExitCode()).To(Equal(2))
		Expect(stderr).To(ContainSubstring(file + ":5: services.a.capacity: not modelled by the reference; accepted here: instances, response, calls, on_failure"))
	})
})
