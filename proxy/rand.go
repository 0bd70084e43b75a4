package proxy

import (
	"math/rand/v2"

	"github.com/meshproof/meshproof/proxy/policy"
)

// seeds is the key from which the proxy derives its random streams: one per downstream request (from
// its x-request-id), one per cluster's outlier detector and one per host's health checks. A stream's
// draws then depend on what it is for, never on the order in which goroutines draw: two runs of the
// same requests with the same seed draw the same back-offs, picks and fault decisions per request.
type seeds struct{ k0, k1 uint64 }

// newSeeds draws the key from src (nil: from the runtime's random source, different on every run).
func newSeeds(src rand.Source) seeds {
	if src == nil {
		return seeds{rand.Uint64(), rand.Uint64()}
	}
	return seeds{src.Uint64(), src.Uint64()}
}

// Salts that keep the streams of one request, or of one name, apart.
const (
	saltRouter uint64 = iota + 1
	saltFault
	saltTracing
	saltOutlier
	saltHealth
	saltRoute // the route's own draws: a weighted cluster
	saltLocalRateLimit
	saltMirror
	saltDrain
)

// seed resets p to the stream of (name, salt).
func (s seeds) seed(p *rand.PCG, name string, salt uint64) {
	h := policy.HashKey(name) ^ salt*0x9e3779b97f4a7c15
	p.Seed(splitmix(s.k0^h), splitmix(s.k1^h^0xda942042e4dd58b5))
}

// stream is a new stream of (name, salt), for one goroutine or under its user's lock.
func (s seeds) stream(name string, salt uint64) *rand.PCG {
	p := new(rand.PCG)
	s.seed(p, name, salt)
	return p
}

// splitmix is SplitMix64's finalizer: nearby inputs give unrelated outputs.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// SeededRand is the proxy's randomness for Options.Rand from a scenario's seed and the proxy's name:
// proxies of one run draw apart, and reruns with the same seed draw the same.
func SeededRand(seed uint64, name string) rand.Source {
	return rand.NewPCG(seed, policy.HashKey(name))
}

// request resets p to the stream of the request with this x-request-id; a request without one gets a
// stream of its own at random (one shared stream would make every such request draw alike).
func (s seeds) request(p *rand.PCG, id string, salt uint64) {
	if id == "" {
		p.Seed(rand.Uint64(), rand.Uint64())
		return
	}
	s.seed(p, id, salt)
}
