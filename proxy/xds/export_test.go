package xds

import (
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Backoff is the wait before stream attempt n+1 of c.
func Backoff(c *Client, n int) time.Duration { return c.backoff(n) }

// Update hands c one state-of-the-world response of type url, as its stream does, and returns what
// would be NACKed (nil: ACKed).
func Update(c *Client, url, version string, values []*anypb.Any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	rs := make([]resource, len(values))
	for i, v := range values {
		rs[i] = resource{value: v}
	}
	return c.st.update(url, version, rs, nil, url == TypeCluster || url == TypeListener)
}

// Accepted is the raw resources of type url c holds, by name.
func Accepted(c *Client, url string) map[string]proto.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]proto.Message{}
	for name, e := range c.st.types[url].entries {
		out[name] = e.raw
	}
	return out
}
