package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// syncBuffer is a bytes.Buffer safe for one writer and one reader at a time.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

var _ = Describe("meshproof proxy", func() {
	It("runs the proxy from an Envoy v3 bootstrap, serves traffic and admin, and stops on /quitquitquit", func() {
		backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, "from backend")
		}))
		DeferCleanup(backend.Close)

		// The repository's example bootstrap, on free ports and pointing at this spec's backend.
		data, err := os.ReadFile("../../proxy/testdata/bootstrap.yaml")
		Expect(err).NotTo(HaveOccurred())
		port := strings.TrimPrefix(backend.URL, "http://127.0.0.1:")
		yaml := strings.NewReplacer("port_value: 9901", "port_value: 0", "port_value: 10000", "port_value: 0",
			"port_value: 8080", "port_value: "+port, "port_value: 8081", "port_value: "+port).Replace(string(data))
		path := filepath.Join(GinkgoT().TempDir(), "bootstrap.yaml")
		Expect(os.WriteFile(path, []byte(yaml), 0o644)).To(Succeed())

		var stdout, stderr syncBuffer
		done := make(chan int)
		go func() { done <- Main(context.Background(), []string{"proxy", "-c", path}, &stdout, &stderr) }()

		addrs := regexp.MustCompile(`listener ingress on (\S+)\nadmin on (\S+)\n`)
		Eventually(stdout.String).WithTimeout(10 * time.Second).Should(MatchRegexp(addrs.String()))
		m := addrs.FindStringSubmatch(stdout.String())
		listener, admin := m[1], m[2]

		resp, err := http.Get("http://" + listener + "/anything")
		Expect(err).NotTo(HaveOccurred())
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(200))
		Expect(string(body)).To(Equal("from backend"))

		resp, err = http.Get("http://" + admin + "/stats")
		Expect(err).NotTo(HaveOccurred())
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		Expect(string(body)).To(ContainSubstring("cluster.backend.upstream_rq_200: 1\n"))

		resp, err = http.Post("http://"+admin+"/quitquitquit", "", nil)
		Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
		Eventually(done).WithTimeout(10 * time.Second).Should(Receive(Equal(0)))
		Expect(stderr.String()).To(BeEmpty())
	})

	It("exits 2 naming file, line and field path on an unsupported Envoy field", func() {
		path := filepath.Join(GinkgoT().TempDir(), "bad.yaml")
		data, err := os.ReadFile("../../proxy/testdata/bootstrap.yaml")
		Expect(err).NotTo(HaveOccurred())
		bad := strings.Replace(string(data), "      lb_policy: ROUND_ROBIN\n", "      lb_policy: ROUND_ROBIN\n      dns_lookup_family: V4_ONLY\n", 1)
		Expect(os.WriteFile(path, []byte(bad), 0o644)).To(Succeed())
		var stdout, stderr syncBuffer
		code := Main(context.Background(), []string{"proxy", "-c", path}, &stdout, &stderr)
		Expect(code).To(Equal(2))
		line := strings.Count(bad[:strings.Index(bad, "dns_lookup_family")], "\n") + 1
		Expect(stderr.String()).To(ContainSubstring(fmt.Sprintf("%s:%d:7: static_resources.clusters[0].dns_lookup_family: ", path, line)))
	})
})
