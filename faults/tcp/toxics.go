// Package tcp is a TCP fault proxy with the toxics of Toxiproxy: latency (with jitter),
// bandwidth, slow_close, timeout, reset_peer, slicer, limit_data and down, each on one direction
// of the connection (stream) and for a share of the connections (toxicity).
//
// Which connections a toxic applies to, and every random draw a toxic makes (jitter, slice
// sizes), is a pure function of (seed, toxic name, connection index): the same seed gives the same
// decisions. The package imports nothing else of meshproof.
package tcp

import (
	"encoding/binary"
	"errors"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/meshproof/meshproof/faults/field"
)

// Toxic types.
const (
	TypeLatency   = "latency"    // delay each chunk by Latency ± Jitter
	TypeBandwidth = "bandwidth"  // at most Rate KB/s
	TypeSlowClose = "slow_close" // delay the close (FIN) by Delay
	TypeTimeout   = "timeout"    // drop all data; close after Timeout (0 = never)
	TypeResetPeer = "reset_peer" // reset the connection (RST) after Timeout (0 = at once)
	TypeSlicer    = "slicer"     // cut chunks into AverageSize ± SizeVariation bytes, Delay apart
	TypeLimitData = "limit_data" // close the connection once Bytes have gone through
	TypeDown      = "down"       // the proxy refuses connections and closes the open ones
)

// Streams: the direction of the data a toxic acts on.
const (
	Upstream   = "upstream"   // client → upstream
	Downstream = "downstream" // upstream → client (the default)
)

// Toxic is one toxic. Fields that do not belong to its Type must be zero.
type Toxic struct {
	Name     string  `yaml:"name"`     // default "toxics[<index>]"; also keys the toxic's random draws
	Type     string  `yaml:"type"`     // one of the Type constants
	Stream   string  `yaml:"stream"`   // Upstream | Downstream; "" = Downstream
	Toxicity float64 `yaml:"toxicity"` // percent of connections, 0..100 (0 never; the scenario loader defaults to 100)

	Latency       time.Duration `yaml:"latency"`        // latency
	Jitter        time.Duration `yaml:"jitter"`         // latency: uniform in [-Jitter, +Jitter]
	Rate          int           `yaml:"rate"`           // bandwidth: KB/s (1 KB = 1024 bytes)
	Delay         time.Duration `yaml:"delay"`          // slow_close; slicer: between slices
	Timeout       time.Duration `yaml:"timeout"`        // timeout, reset_peer
	AverageSize   int           `yaml:"average_size"`   // slicer
	SizeVariation int           `yaml:"size_variation"` // slicer: uniform in [-SizeVariation, +SizeVariation]
	Bytes         int64         `yaml:"bytes"`          // limit_data
}

// Validate checks one toxic.
func (t Toxic) Validate() error {
	var errs []error
	neg := func(path string, d time.Duration) {
		if d < 0 {
			errs = append(errs, field.Errorf(path, "%v is negative, want >= 0", d))
		}
	}
	neg("latency", t.Latency)
	neg("jitter", t.Jitter)
	neg("delay", t.Delay)
	neg("timeout", t.Timeout)
	if math.IsNaN(t.Toxicity) || t.Toxicity < 0 || t.Toxicity > 100 {
		errs = append(errs, field.Errorf("toxicity", "%v is out of range, want 0..100", t.Toxicity))
	}
	switch t.Stream {
	case "", Upstream, Downstream:
	default:
		errs = append(errs, field.Errorf("stream", "%q is not a stream, want upstream or downstream", t.Stream))
	}
	if b, ok := behaviour(t); ok {
		errs = append(errs, b.check()...)
	} else {
		errs = append(errs, field.Errorf("type", "%q is not a toxic, want one of %s", t.Type, strings.Join(typeNames(), ", ")))
	}
	return errors.Join(errs...)
}

// stream returns the toxic's direction, Downstream by default.
func (t Toxic) stream() string {
	if t.Stream == "" {
		return Downstream
	}
	return t.Stream
}

// ToxicRand returns the random source of a toxic on the n-th connection (n from 1) of a proxy: a
// pure function of (seed, toxic name, n). Its first draw decides the toxicity (see Applies), the
// following ones the toxic's jitter or slice sizes, in data order.
func ToxicRand(seed uint64, name string, n uint64) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write(binary.BigEndian.AppendUint64(nil, n))
	return rand.New(rand.NewPCG(seed^h.Sum64(), n))
}

// Applies is pure: whether the toxic applies to the connection whose random source is rng (as
// returned by ToxicRand), consuming its first draw. Toxicity 0 never applies, 100 always does.
func (t Toxic) Applies(rng *rand.Rand) bool {
	return rng.Float64()*100 < t.Toxicity
}

// LatencyOf draws the delay of one chunk: Latency + uniform jitter, never negative.
func (t Toxic) LatencyOf(rng *rand.Rand) time.Duration {
	d := t.Latency
	if t.Jitter > 0 {
		d += time.Duration((2*rng.Float64() - 1) * float64(t.Jitter))
	}
	return max(d, 0)
}

// SliceSizes cuts n bytes into slices of AverageSize ± SizeVariation bytes (the last may be
// smaller).
func (t Toxic) SliceSizes(n int, rng *rand.Rand) []int {
	var sizes []int
	for n > 0 {
		size := t.AverageSize
		if t.SizeVariation > 0 {
			size += rng.IntN(2*t.SizeVariation+1) - t.SizeVariation
		}
		size = min(max(size, 1), n)
		sizes = append(sizes, size)
		n -= size
	}
	return sizes
}
