package load

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Request is one entry of a weighted request mix: each request of a run is one of the entries, drawn
// with probability Weight / (sum of the weights) from a generator seeded with Config.Seed and the
// request's Seq (so a seed gives the same sequence of requests whatever the timing). All entries go to
// the host of Config.URL, over the same connections.
type Request struct {
	Weight int    // relative weight, > 0
	Method string // default Config.Method, then GET
	// Path is the path and query, starting with "/"; "" means Config.URL's path and query.
	Path   string
	Header http.Header // added to Config.Header (an entry here replaces the same name there)
	Body   []byte      // default Config.Body
}

// target is where every request of a run goes.
type target struct {
	scheme string
	addr   string // host:port to dial
	host   string // default Host header
	tls    *tls.Config
}

func newTarget(u *url.URL) *target {
	t := &target{scheme: u.Scheme, host: u.Host}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	t.addr = net.JoinHostPort(u.Hostname(), port)
	if u.Scheme == "https" {
		t.tls = &tls.Config{ServerName: u.Hostname(), NextProtos: []string{"http/1.1"}}
	}
	return t
}

// prepared is a request ready to send: for HTTP/1.1 the serialized bytes around the x-request-id line,
// for h2c the parts of an http.Request.
type prepared struct {
	method     string
	isHead     bool
	idempotent bool
	head       []byte // request line and headers, up to the x-request-id header
	tail       []byte // "\r\n", the remaining headers, the blank line and the body

	url    string // absolute URL, for h2c
	host   string // Host, for h2c
	header http.Header
	body   []byte
}

// prepare builds the request of one mix entry against base (Config.URL).
func prepare(base *url.URL, t *target, method string, header http.Header, body []byte) (*prepared, error) {
	if _, err := http.NewRequest(method, base.String(), nil); err != nil {
		return nil, err
	}
	h := header.Clone()
	if h == nil {
		h = http.Header{}
	}
	host := t.host
	if v := h.Get("Host"); v != "" {
		host = v
	}
	h.Del("Host")
	h.Del(HeaderRequestID)
	for name, values := range h {
		if !validHeaderName(name) {
			return nil, fmt.Errorf("invalid header name %q", name)
		}
		for _, v := range values {
			if strings.ContainsAny(v, "\r\n\x00") {
				return nil, fmt.Errorf("invalid value for header %q", name)
			}
		}
	}
	if strings.ContainsAny(host, "\r\n\x00 ") {
		return nil, fmt.Errorf("invalid Host %q", host)
	}
	p := &prepared{
		method:     method,
		isHead:     method == http.MethodHead,
		idempotent: slices.Contains([]string{"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"}, method),
		url:        base.String(),
		host:       host,
		header:     h,
		body:       body,
	}

	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, base.RequestURI(), host)
	if h.Get("User-Agent") == "" {
		b.WriteString("User-Agent: meshproof\r\n")
	}
	names := make([]string, 0, len(h))
	for name := range h {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, v := range h[name] {
			fmt.Fprintf(&b, "%s: %s\r\n", name, v)
		}
	}
	p.head = bytes.Clone(b.Bytes())
	b.Reset()
	b.WriteString("\r\n")
	if body != nil || method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch {
		b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n")
	}
	b.WriteString("\r\n")
	b.Write(body)
	p.tail = bytes.Clone(b.Bytes())
	return p, nil
}

func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for _, c := range []byte(name) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return true
}

// mix draws the request of each Seq from the weighted entries.
type mix struct {
	reqs []*prepared
	cum  []uint64 // cumulative weights
	seed uint64
}

// pick returns the request of seq: a pure function of (seed, seq).
func (m *mix) pick(seq uint64) *prepared {
	if len(m.reqs) == 1 {
		return m.reqs[0]
	}
	return m.reqs[MixPick(m.cum, m.seed, seq)]
}

// MixPick is the index of the mix entry of request seq, given the entries' cumulative weights (cum[i]
// is the sum of the weights of entries 0..i, each > 0): a pure function of (cum, seed, seq), the
// draw the generator makes for every request, so that a simulator sends the same mix for a seed.
func MixPick(cum []uint64, seed, seq uint64) int {
	if len(cum) <= 1 {
		return 0
	}
	total := cum[len(cum)-1]
	u := splitmix64(seed^(seq*0x9e3779b97f4a7c15)) % total // bias < total/2^64: negligible
	i, _ := slices.BinarySearchFunc(cum, u+1, func(c, v uint64) int {
		switch {
		case c < v:
			return -1
		case c > v:
			return 1
		}
		return 0
	})
	return i
}

// splitmix64 is a fast, well-mixed 64-bit hash (Steele, Lea, Flood 2014).
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}
