package tcp

import (
	"math/rand/v2"
	"slices"
	"time"
)

// toxic is the behaviour of one toxic type, one type per file as Toxiproxy's toxics are
// (toxics/toxic.go): each embeds its Toxic config and checks its own fields. What it does is one of
// the small interfaces below, which the proxy asks for where it needs it; no switch on the type
// string. The randomness is not the behaviour's: a toxic's draws come from its state on each
// connection, decided once per (seed, toxic name, connection) by ToxicRand.
type toxic interface {
	spec() Toxic
	check() []error // the fields of its type, paths relative to the toxic
}

// chunker acts on each chunk of data read in its direction (see stage.Write).
type chunker interface {
	chunk(c *chunk, s *state)
}

// timed acts once on a connection, after a delay from when it first applies to it.
type timed interface {
	after() (time.Duration, bool) // false: never
	expire(l *link)
}

// closer delays the FIN that follows EOF in its direction.
type closer interface {
	closeDelay() time.Duration
}

// listenerToxic acts on the proxy's listener, not on connections: it applies to none.
type listenerToxic interface {
	listener()
}

// chunk is what the toxics of a direction make of one chunk read, in toxic order: stage.Write drops
// it, or waits delay, cuts it into slices and paces each, then closes the connection if cut.
type chunk struct {
	l          *link
	p          []byte
	drop       bool          // the data never arrives
	cut        bool          // close the connection once p is written
	delay      time.Duration // before the first byte
	slicer     *slicer       // the first slicer, which cuts p; nil = one piece
	slicerRand *rand.Rand
	rates      []int // KB/s; the slowest paces each piece
}

// toxicType is a toxic type's name and its behaviour's constructor.
type toxicType struct {
	name string
	of   func(Toxic) toxic
}

// toxicTypes is every toxic type, in the order of the Type constants.
var toxicTypes = []toxicType{
	{TypeLatency, func(t Toxic) toxic { return latency{t} }},
	{TypeBandwidth, func(t Toxic) toxic { return bandwidth{t} }},
	{TypeSlowClose, func(t Toxic) toxic { return slowClose{t} }},
	{TypeTimeout, func(t Toxic) toxic { return timeout{t} }},
	{TypeResetPeer, func(t Toxic) toxic { return resetPeer{t} }},
	{TypeSlicer, func(t Toxic) toxic { return slicer{t} }},
	{TypeLimitData, func(t Toxic) toxic { return limitData{t} }},
	{TypeDown, func(t Toxic) toxic { return down{t} }},
}

// behaviour returns the toxic of t's type; false for an unknown type.
func behaviour(t Toxic) (toxic, bool) {
	i := slices.IndexFunc(toxicTypes, func(tt toxicType) bool { return tt.name == t.Type })
	if i < 0 {
		return nil, false
	}
	return toxicTypes[i].of(t), true
}

// typeNames lists the toxic types, for messages.
func typeNames() []string {
	names := make([]string, len(toxicTypes))
	for i, tt := range toxicTypes {
		names[i] = tt.name
	}
	return names
}

func (t Toxic) spec() Toxic { return t }
