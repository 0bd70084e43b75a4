package config

import (
	"bytes"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/lexer"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// Limits on a YAML file read by ParseYAML (scenarios and bootstraps alike). They are checked before
// the YAML parser builds anything: goccy/go-yaml's parser takes time and memory quadratic in the
// nesting depth of flow collections (80 KB of "[" took 2.5 GB), and its decoder panics on some tag
// forms, so neither sees an input that breaks a limit.
const (
	// MaxYAMLBytes is the largest file accepted (8 MiB: a bootstrap with thousands of clusters fits).
	MaxYAMLBytes = 8 << 20
	// MaxYAMLDepth is the deepest nesting of mappings and sequences accepted. An Envoy bootstrap nests
	// about 20 levels (listener → filter chain → HCM → route config → virtual host → route → retry
	// policy → back-off); protobuf's own decoders stop at 100.
	MaxYAMLDepth = 64
	// MaxYAMLAliases bounds alias references (*name), so a "billion laughs" file cannot expand.
	MaxYAMLAliases = 1000
)

// ParseYAML checks data against the limits above and parses it. Every error is an *Error with the file
// and, where there is one, the line and column. A YAML tag ("!foo", "!!str") is refused: neither a
// scenario nor an Envoy bootstrap has a use for one, and a non-specific tag ("! 0") panics the decoder.
func ParseYAML(data []byte, file string) (f *ast.File, err error) {
	if len(data) > MaxYAMLBytes {
		return nil, &Error{File: file, Msg: fmt.Sprintf("file is %d bytes; at most %d (%d MiB) are accepted", len(data), MaxYAMLBytes, MaxYAMLBytes>>20)}
	}
	if e := checkText(data); e != nil {
		e.File = file
		return nil, e
	}
	defer func() {
		if r := recover(); r != nil {
			f, err = nil, &Error{File: file, Msg: fmt.Sprintf("the YAML parser failed on this input (%v); please report it with the file", r)}
		}
	}()
	tokens := lexer.Tokenize(string(data))
	if e := checkTokens(tokens); e != nil {
		e.File = file
		return nil, e
	}
	f, err = parser.Parse(tokens, 0)
	if err != nil {
		e := &Error{File: file, Msg: "invalid YAML: " + yamlMessage(err)}
		var yerr yaml.Error
		if errors.As(err, &yerr) && yerr.GetToken() != nil && yerr.GetToken().Position != nil {
			e.Line, e.Column = yerr.GetToken().Position.Line, yerr.GetToken().Position.Column
		}
		return nil, e
	}
	for _, doc := range f.Docs {
		if doc.Body == nil {
			continue
		}
		if n := deeper(doc.Body, 0); n != nil {
			line, col := position(n)
			return nil, &Error{File: file, Line: line, Column: col,
				Msg: fmt.Sprintf("nested more than %d levels deep", MaxYAMLDepth)}
		}
	}
	return f, nil
}

// NodeToValue decodes node into v as yaml.NodeToValue does, turning a panic inside the YAML library
// into an *Error at the node (the library has panicked on inputs it parsed without complaint).
func NodeToValue(node ast.Node, v any, opts ...yaml.DecodeOption) (err error) {
	defer func() {
		if r := recover(); r != nil {
			line, col := position(node)
			err = &Error{Line: line, Column: col, Msg: fmt.Sprintf("cannot decode this value (the YAML library failed: %v)", r)}
		}
	}()
	return yaml.NodeToValue(node, v, opts...)
}

// checkText refuses a file that is not UTF-8 text (a binary file given by mistake), naming where the
// first offending byte is rather than echoing the bytes.
func checkText(data []byte) *Error {
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r == 0 || (r == utf8.RuneError && size == 1) {
			line := bytes.Count(data[:i], []byte("\n")) + 1
			col := i - bytes.LastIndexByte(data[:i], '\n')
			return &Error{Line: line, Column: col, Msg: fmt.Sprintf("not a UTF-8 text file (byte 0x%02x at offset %d); want YAML or JSON", data[i], i)}
		}
		i += size
	}
	return nil
}

// checkTokens refuses tags, too many aliases and flow collections ([ and {) nested deeper than
// MaxYAMLDepth, by the tokens alone (the lexer is linear; the parser is not).
func checkTokens(tokens token.Tokens) *Error {
	depth, aliases := 0, 0
	for _, t := range tokens {
		switch t.Type {
		case token.SequenceStartType, token.MappingStartType:
			depth++
			if depth > MaxYAMLDepth {
				return tokenError(t, fmt.Sprintf("nested more than %d levels deep", MaxYAMLDepth))
			}
		case token.SequenceEndType, token.MappingEndType:
			if depth > 0 {
				depth--
			}
		case token.TagType:
			return tokenError(t, fmt.Sprintf("YAML tag %q is not supported; write the plain value", t.Value))
		case token.AliasType:
			aliases++
			if aliases > MaxYAMLAliases {
				return tokenError(t, fmt.Sprintf("more than %d aliases (*name)", MaxYAMLAliases))
			}
		}
	}
	return nil
}

func tokenError(t *token.Token, msg string) *Error {
	e := &Error{Msg: msg}
	if t.Position != nil {
		e.Line, e.Column = t.Position.Line, t.Position.Column
	}
	return e
}

// deeper returns a node nested more than MaxYAMLDepth collections below n (n at depth d), or nil.
func deeper(n ast.Node, d int) ast.Node {
	switch v := n.(type) {
	case *ast.MappingNode:
		if d++; d > MaxYAMLDepth {
			return n
		}
		for _, mv := range v.Values {
			if x := deeper(mv.Value, d); x != nil {
				return x
			}
		}
	case *ast.MappingValueNode:
		if d++; d > MaxYAMLDepth {
			return n
		}
		return deeper(v.Value, d)
	case *ast.SequenceNode:
		if d++; d > MaxYAMLDepth {
			return n
		}
		for _, item := range v.Values {
			if item == nil {
				continue
			}
			if x := deeper(item, d); x != nil {
				return x
			}
		}
	case *ast.AnchorNode:
		return deeper(v.Value, d)
	case *ast.TagNode:
		return deeper(v.Value, d)
	}
	return nil
}
