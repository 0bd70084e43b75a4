package tracing_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/meshproof/meshproof/mesh/tracing"
)

var _ = Describe("Receiver", func() {
	request := func(spans int) *coltracepb.ExportTraceServiceRequest {
		ss := &tracepb.ScopeSpans{}
		for i := range spans {
			ss.Spans = append(ss.Spans, &tracepb.Span{TraceId: bytes.Repeat([]byte{1}, 16), SpanId: []byte{0, 0, 0, 0, 0, 0, 0, byte(i + 1)}, Name: "s"})
		}
		return &coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{ScopeSpans: []*tracepb.ScopeSpans{ss}}}}
	}
	post := func(url, contentType string, body []byte) int {
		resp, err := http.Post(url, contentType, bytes.NewReader(body))
		Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		return resp.StatusCode
	}

	It("keeps protobuf and JSON exports, forwards each as received, and drops spans past its limit", func() {
		var mu sync.Mutex
		var forwarded []string
		fwd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			forwarded = append(forwarded, r.Header.Get("Content-Type"))
			mu.Unlock()
		}))
		DeferCleanup(fwd.Close)
		r := tracing.NewReceiver(5, fwd.URL+"/v1/traces")
		Expect(r.Start("127.0.0.1:0")).To(Succeed())
		DeferCleanup(r.Close)

		pb, err := proto.Marshal(request(2))
		Expect(err).NotTo(HaveOccurred())
		Expect(post(r.URL(), "application/x-protobuf", pb)).To(Equal(200))
		js, err := tracing.MarshalOTLPJSON(request(3))
		Expect(err).NotTo(HaveOccurred())
		Expect(post(r.URL(), "application/json", js)).To(Equal(200))
		Expect(post(r.URL(), "application/x-protobuf", pb)).To(Equal(200), "accepted, but over the limit of 5 spans")
		Expect(post(r.URL(), "application/x-protobuf", []byte("not protobuf"))).To(Equal(400))

		Expect(r.Close()).To(Succeed())
		Expect(r.Requests()).To(HaveLen(2))
		kept, dropped := r.Spans()
		Expect([]int{kept, dropped}).To(Equal([]int{5, 2}))
		Expect(proto.Equal(r.Requests()[0], request(2))).To(BeTrue())
		mu.Lock()
		defer mu.Unlock()
		Expect(forwarded).To(Equal([]string{"application/x-protobuf", "application/json", "application/x-protobuf"}))
	})

	It("writes received exports after the local spans in traces.otlp.json", func() {
		path := GinkgoT().TempDir() + "/t.json"
		Expect(tracing.WriteFile(path, nil, request(2), request(1))).To(Succeed())
		got, err := tracing.ReadFile(path)
		Expect(err).NotTo(HaveOccurred())
		Expect(got).To(HaveLen(2))
		Expect(proto.Equal(got[1], request(1))).To(BeTrue())
	})
})
