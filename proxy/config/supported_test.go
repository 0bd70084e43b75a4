package config_test

import (
	"slices"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/meshproof/meshproof/proxy/config"
)

var _ = Describe("the supported subset", func() {
	It("names only messages and fields that exist in Envoy's API, each list sorted", func() {
		for msg, fields := range config.SupportedFields() {
			md := findMessage(msg)
			Expect(slices.IsSorted(fields)).To(BeTrue(), msg)
			for _, name := range fields {
				Expect(md.Fields().ByName(protoreflect.Name(name))).NotTo(BeNil(), "%s.%s", msg, name)
			}
		}
	})

	It("restricts only enum fields, to their values, and typed_configs, to registered types", func() {
		for field, values := range config.SupportedValues() {
			i := strings.LastIndexByte(field, '.')
			msg, name := field[:i], field[i+1:]
			fd := findMessage(msg).Fields().ByName(protoreflect.Name(name))
			Expect(fd).NotTo(BeNil(), field)
			if fd.IsMap() { // a map of typed configs (typed_extension_protocol_options): its values'
				fd = fd.MapValue()
			}
			Expect(values).NotTo(BeEmpty(), field)
			for _, v := range values {
				switch {
				case fd.Enum() != nil:
					Expect(fd.Enum().Values().ByName(protoreflect.Name(v))).NotTo(BeNil(), "%s: %s", field, v)
				case fd.Message() != nil && fd.Message().FullName() == "google.protobuf.Any":
					_, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(v))
					Expect(err).NotTo(HaveOccurred(), "%s: %s", field, v)
				default:
					Fail(field + " is neither an enum nor a typed_config")
				}
			}
		}
	})

	It("holds the cluster's resilience settings and the load balancers meshproof implements", func() {
		Expect(config.SupportedFields()).To(HaveKeyWithValue("envoy.config.cluster.v3.Cluster", ContainElements(
			"connect_timeout", "lb_policy", "load_assignment", "name", "type", "outlier_detection", "circuit_breakers", "health_checks")))
		Expect(config.SupportedFields()["envoy.config.cluster.v3.Cluster"]).NotTo(ContainElement("dns_lookup_family"))
		Expect(config.SupportedFields()).To(HaveKeyWithValue("envoy.extensions.filters.http.router.v3.Router", BeEmpty()))
		Expect(config.SupportedValues()).To(HaveKeyWithValue("envoy.config.cluster.v3.Cluster.lb_policy",
			ConsistOf("ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV")))
	})

	It("returns copies callers cannot use to change it", func() {
		config.SupportedFields()["envoy.config.cluster.v3.Cluster"][0] = "dns_lookup_family"
		Expect(config.SupportedFields()["envoy.config.cluster.v3.Cluster"]).NotTo(ContainElement("dns_lookup_family"))
	})
})

func findMessage(name string) protoreflect.MessageDescriptor {
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
	ExpectWithOffset(1, err).NotTo(HaveOccurred(), name)
	md, ok := d.(protoreflect.MessageDescriptor)
	ExpectWithOffset(1, ok).To(BeTrue(), "%s is not a message", name)
	return md
}
