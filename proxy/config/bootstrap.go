package config

import (
	"errors"
	"fmt"
	"os"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"github.com/goccy/go-yaml/ast"
)

// LoadBootstrap reads an Envoy v3 bootstrap (YAML or JSON) from path; see ParseBootstrap.
func LoadBootstrap(path string) (*Bootstrap, *bootstrapv3.Bootstrap, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read bootstrap: %w", err)
	}
	return ParseBootstrap(data, path)
}

// ParseBootstrap parses an Envoy v3 bootstrap written in YAML (or JSON, which is YAML too) and
// returns its validated internal form along with the decoded proto. file names the source in errors.
//
// The input must hold exactly one document. It is decoded with DecodeNode (field paths start at the
// bootstrap's own fields, e.g. "static_resources.clusters[0].name"), then checked and converted by
// FromProto, whose errors are given the file, line and column of the field they name. All errors found
// are returned together (errors.Join); each is an *Error.
func ParseBootstrap(data []byte, file string) (*Bootstrap, *bootstrapv3.Bootstrap, error) {
	root, err := parseDocument(data, file)
	if err != nil {
		return nil, nil, err
	}
	pb := &bootstrapv3.Bootstrap{}
	if err := DecodeNode(root, pb, file, ""); err != nil {
		return nil, nil, err
	}
	b, err := FromProto(pb)
	if err != nil {
		return nil, nil, locate(err, root, file)
	}
	return b, pb, nil
}

// parseDocument parses data and returns the body of its only YAML document.
func parseDocument(data []byte, file string) (ast.Node, error) {
	f, err := ParseYAML(data, file)
	if err != nil {
		return nil, err
	}
	var docs []ast.Node
	for _, doc := range f.Docs {
		if doc.Body != nil {
			docs = append(docs, doc.Body)
		}
	}
	switch len(docs) {
	case 0:
		// At line 1, as every error of a file has a line within it (FuzzParseBootstrap).
		return nil, &Error{File: file, Line: 1, Column: 1, Msg: "empty document; want an Envoy v3 bootstrap"}
	case 1:
		return docs[0], nil
	default:
		line, col := position(docs[1])
		return nil, &Error{File: file, Line: line, Column: col,
			Msg: fmt.Sprintf("found %d YAML documents; want exactly one", len(docs))}
	}
}

// FromProto checks an Envoy v3 bootstrap (decoded from a file or built in code) and converts it to
// the internal form, applying Envoy's defaults. It reports, each with its field path:
//   - every field, enum value or typed_config type outside the supported subset (SupportedFields);
//   - violations of the protos' own validation rules (protoc-gen-validate's ValidateAll), including
//     inside typed configs;
//   - meshproof's semantic rules: one filter chain with exactly one HTTP connection manager whose last
//     HTTP filter is the router, route_config inline or rds over ADS, routes naming existing clusters,
//     unique cluster names and virtual host domains, at least one endpoint per STATIC cluster (an EDS
//     cluster has none until an xDS client fills them in), IP addresses and ports in 0..65535,
//     supported retry_on conditions, max_interval ≥ base_interval; dynamic_resources with an
//     ads_config over gRPC to a STATIC cluster, CDS, LDS, RDS and EDS over ADS only.
//
// All errors found are returned together (errors.Join); each is an *Error with a Path and no position.
func FromProto(b *bootstrapv3.Bootstrap) (*Bootstrap, error) {
	if errs := checkSupported(b.ProtoReflect(), ""); len(errs) > 0 {
		return nil, joinErrors(errs)
	}
	if err := b.ValidateAll(); err != nil {
		return nil, joinErrors(pgvErrors(err, b.ProtoReflect().Descriptor(), ""))
	}
	var c converter
	out := c.bootstrap(b)
	if len(c.errs) > 0 {
		return nil, joinErrors(c.errs)
	}
	return out, nil
}

func joinErrors(errs []*Error) error {
	all := make([]error, len(errs))
	for i, e := range errs {
		all[i] = e
	}
	return errors.Join(all...)
}
