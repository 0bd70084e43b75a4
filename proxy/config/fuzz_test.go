package config_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/meshproof/meshproof/proxy/config"
)

// FuzzParseBootstrap fuzzes the Envoy bootstrap decoder (YAML limits, DecodeNode, FromProto), seeded
// with the bootstraps of proxy/testdata and proxy/config/testdata. Properties:
//   - no panic;
//   - deterministic: the same bytes give equal protos, or the same errors;
//   - every error is a *config.Error (several are joined) naming the file, at a line within the input
//     (1 … its number of lines);
//   - an accepted bootstrap's proto round-trips through FromProto alone (no error: what the file
//     decoder accepted, the proto checker accepts).
//
// slow bounds one parse of a fuzz input (a few KB): a YAML parser quadratic in some construct once took
// seconds on 80 KB (issue #18 defect 4).
const slow = 2 * time.Second

func FuzzParseBootstrap(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	more, _ := filepath.Glob("../testdata/*.yaml")
	files = append(files, more...)
	if len(files) == 0 {
		f.Fatal("no bootstrap seeds")
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{"", "{}", "static_resources: {}", "admin: [", "a: !!binary x", "---\n---\n", "\x00\x01"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const file = "fuzz.yaml"
		start := time.Now()
		_, pb, err := config.ParseBootstrap(data, file)
		if d := time.Since(start); d > slow {
			t.Fatalf("parsing %d bytes took %s (more than %s): %q", len(data), d, slow, data)
		}
		_, pb2, err2 := config.ParseBootstrap(data, file)
		if err != nil {
			if err2 == nil || err.Error() != err2.Error() {
				t.Fatalf("ParseBootstrap is not deterministic on %q:\n%v\n---\n%v", data, err, err2)
			}
			lines := bytes.Count(data, []byte("\n")) + 1
			for _, e := range leaves(err) {
				var ce *config.Error
				switch {
				case !errors.As(e, &ce):
					t.Fatalf("error %q (%T) on %q is not a *config.Error", e, e, data)
				case ce.File != file:
					t.Fatalf("error %q on %q names file %q, want %q", e, data, ce.File, file)
				case ce.Line < 1 || ce.Line > lines:
					t.Fatalf("error %q on %q is at line %d, not within 1..%d", e, data, ce.Line, lines)
				}
			}
			return
		}
		if err2 != nil || !proto.Equal(pb, pb2) {
			t.Fatalf("ParseBootstrap is not deterministic on %q: %v", data, err2)
		}
		if _, err := config.FromProto(pb); err != nil {
			t.Fatalf("ParseBootstrap accepts %q, FromProto refuses its proto: %v", data, err)
		}
	})
}

func leaves(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, leaves(e)...)
		}
		return out
	}
	return []error{err}
}
