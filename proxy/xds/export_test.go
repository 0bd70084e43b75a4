package xds

import "time"

// Backoff is the wait before stream attempt n+1 of c.
func Backoff(c *Client, n int) time.Duration { return c.backoff(n) }
