package main

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"
	"github.com/onsi/gomega/gexec"
)

func TestMeshproofProxy(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "meshproof-proxy Suite")
}

var _ = Describe("meshproof-proxy, the proxy-only binary", func() {
	It("links the proxy and nothing of the runners, the docker client, the load generator, the reports or plotting", func() {
		out, err := exec.Command("go", "list", "-deps", ".").Output()
		Expect(err).NotTo(HaveOccurred())
		deps := strings.Fields(string(out))
		Expect(deps).To(ContainElement("github.com/meshproof/meshproof/proxy"))
		const ours = "github.com/meshproof/meshproof/"
		allowed := regexp.MustCompile(`^(proxy(/.*)?|mesh/tracing|cmd/internal/(cli|proxycmd|sysmon)|cmd/meshproof-proxy)$`)
		foreign := regexp.MustCompile(`testcontainers|docker|moby|gonum|/plot\b|containerd|gopsutil|otelhttp`)
		for _, d := range deps {
			if rest, ok := strings.CutPrefix(d, ours); ok {
				Expect(allowed.MatchString(rest)).To(BeTrue(), "the proxy binary links %s", d)
			}
			Expect(foreign.MatchString(d)).To(BeFalse(), "the proxy binary links %s", d)
		}
	})

	It("runs the proxy from a bootstrap, re-executed once with the system monitor kept awake, and stops on SIGTERM", Label("slow"), func() {
		bin, err := gexec.Build("github.com/meshproof/meshproof/cmd/meshproof-proxy")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(gexec.CleanupBuildArtifacts)

		version, err := exec.Command(bin, "--version").Output()
		Expect(err).NotTo(HaveOccurred())
		Expect(string(version)).To(HavePrefix("meshproof "))

		data, err := os.ReadFile("../../proxy/testdata/bootstrap.yaml")
		Expect(err).NotTo(HaveOccurred())
		yaml := strings.NewReplacer("port_value: 9901", "port_value: 0", "port_value: 10000", "port_value: 0").Replace(string(data))
		path := filepath.Join(GinkgoT().TempDir(), "bootstrap.yaml")
		Expect(os.WriteFile(path, []byte(yaml), 0o644)).To(Succeed())

		cmd := exec.Command(bin, "-c", path)
		cmd.Env = append(os.Environ(), "GODEBUG=madvdontneed=1")
		stdout, err := cmd.StdoutPipe()
		Expect(err).NotTo(HaveOccurred())
		stderr := gbytes.NewBuffer()
		cmd.Stderr = stderr
		Expect(cmd.Start()).To(Succeed())
		DeferCleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

		lines := bufio.NewScanner(stdout)
		admin := ""
		for admin == "" && lines.Scan() {
			if a, ok := strings.CutPrefix(lines.Text(), "admin on "); ok {
				admin = a
			}
		}
		Expect(admin).NotTo(BeEmpty())
		resp, err := http.Get("http://" + admin + "/ready")
		Expect(err).NotTo(HaveOccurred())
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(200), string(body))

		// The same process (exec keeps the pid), now with the user's GODEBUG and schedtrace.
		environ, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/environ")
		Expect(err).NotTo(HaveOccurred())
		Expect(strings.Split(string(environ), "\x00")).To(ContainElement("GODEBUG=madvdontneed=1,schedtrace=2147483647"))

		Expect(cmd.Process.Signal(os.Interrupt)).To(Succeed())
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		Eventually(done).WithTimeout(10 * time.Second).Should(Receive(BeNil()))
		Expect(string(stderr.Contents())).NotTo(ContainSubstring("meshproof"))
	})
})
