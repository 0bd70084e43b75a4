package load

import (
	"bufio"
	"strings"
	"testing"
)

// TestReadResponseConnectionTokens is the regression test of FuzzReadResponse's first finding: the
// Connection and Transfer-Encoding fields were matched as substrings, so "Connection: close0" closed a
// connection net/http keeps, and "Transfer-Encoding: notchunked" would have been read as chunked.
func TestReadResponseConnectionTokens(t *testing.T) {
	tests := []struct {
		name, give string
		wantKeep   bool
	}{
		{"close0 is not close", "HTTP/1.1 200 OK\r\nConnection: close0\r\nContent-Length: 0\r\n\r\n", true},
		{"close among tokens", "HTTP/1.1 200 OK\r\nConnection: foo, Close\r\nContent-Length: 0\r\n\r\n", false},
		{"keep-alive on HTTP/1.0", "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", true},
		{"not-keep-alive on HTTP/1.0", "HTTP/1.0 200 OK\r\nConnection: not-keep-alive\r\nContent-Length: 0\r\n\r\n", false},
		{"notchunked is not chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: notchunked\r\nContent-Length: 0\r\n\r\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tt.give + next))
			status, keep, _, err := readResponse(br, false)
			if err != nil || status != 200 || keep != tt.wantKeep {
				t.Fatalf("readResponse(%q) = %d keep %v, %v; want 200 keep %v", tt.give, status, keep, err, tt.wantKeep)
			}
			if status, _, _, err := readResponse(br, false); status != 299 || err != nil {
				t.Fatalf("the next response: %d, %v; want 299", status, err)
			}
		})
	}
}
