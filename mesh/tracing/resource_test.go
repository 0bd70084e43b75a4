package tracing_test

import (
	"context"
	"os"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go.opentelemetry.io/otel/attribute"

	"github.com/meshproof/meshproof/mesh/tracing"
)

// OTEL_RESOURCE_ATTRIBUTES (the OpenTelemetry SDK environment specification) adds attributes to every
// span's resource; the component's own service.name and service.instance.id stay its own.
var _ = Describe("OTEL_RESOURCE_ATTRIBUTES", func() {
	setenv := func(v string) {
		old, had := os.LookupEnv(tracing.EnvResourceAttributes)
		Expect(os.Setenv(tracing.EnvResourceAttributes, v)).To(Succeed())
		DeferCleanup(func() {
			if had {
				_ = os.Setenv(tracing.EnvResourceAttributes, old)
			} else {
				_ = os.Unsetenv(tracing.EnvResourceAttributes)
			}
		})
	}
	spanResource := func(p *tracing.Provider, service, instance string) map[attribute.Key]string {
		_, span := p.For(service, instance).Tracer("t").Start(context.Background(), "s")
		span.End()
		Expect(p.ForceFlush(context.Background())).To(Succeed())
		spans := p.Spans()
		Expect(spans).NotTo(BeEmpty())
		out := map[attribute.Key]string{}
		for _, kv := range spans[len(spans)-1].Resource().Attributes() {
			out[kv.Key] = kv.Value.String()
		}
		return out
	}

	It("adds its key=value pairs, percent-decoded, under the component's own service name and instance", func() {
		setenv("deployment.environment=ci, team=payments%2Fcore,service.name=ignored")
		p, err := tracing.New(tracing.Config{Collect: true})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { _ = p.Shutdown(context.Background()) })
		attrs := spanResource(p, "checkout", "checkout/1")
		Expect(attrs).To(HaveKeyWithValue(attribute.Key("deployment.environment"), "ci"))
		Expect(attrs).To(HaveKeyWithValue(attribute.Key("team"), "payments/core"))
		Expect(attrs).To(HaveKeyWithValue(attribute.Key("service.name"), "checkout"))
		Expect(attrs).To(HaveKeyWithValue(attribute.Key("service.instance.id"), "checkout/1"))
	})

	It("refuses a malformed value, naming the variable", func() {
		setenv("deployment.environment")
		_, err := tracing.New(tracing.Config{Collect: true})
		Expect(err).To(MatchError(ContainSubstring("OTEL_RESOURCE_ATTRIBUTES")))
	})
})
