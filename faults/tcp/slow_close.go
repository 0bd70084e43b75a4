package tcp

import "time"

// slowClose delays the FIN that follows EOF by Delay.
type slowClose struct{ Toxic }

var _ closer = slowClose{}

func (slowClose) check() []error { return nil }

func (t slowClose) closeDelay() time.Duration { return t.Delay }
