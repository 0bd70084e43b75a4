package policy

import (
	"encoding/binary"
	"math/bits"
)

// HashKey is Envoy's HashUtil::xxHash64 (XXH64, seed 0) of s: the hash its ring-hash and Maglev load
// balancers use for host keys, and the one its hash policies use for request keys.
func HashKey(s string) uint64 { return xxHash64(s, 0) }

const (
	xxPrime1 uint64 = 11400714785074694791
	xxPrime2 uint64 = 14029467366897019727
	xxPrime3 uint64 = 1609587929392839161
	xxPrime4 uint64 = 9650029242287828579
	xxPrime5 uint64 = 2870177450012600261
)

func xxRound(acc, input uint64) uint64 {
	acc += input * xxPrime2
	acc = bits.RotateLeft64(acc, 31)
	return acc * xxPrime1
}

func xxMerge(acc, val uint64) uint64 {
	acc ^= xxRound(0, val)
	return acc*xxPrime1 + xxPrime4
}

// xxHash64 is XXH64 of s with the given seed.
func xxHash64(s string, seed uint64) uint64 {
	n := len(s)
	var h uint64
	if n >= 32 {
		v1 := seed + xxPrime1 + xxPrime2
		v2 := seed + xxPrime2
		v3 := seed
		v4 := seed - xxPrime1
		for len(s) >= 32 {
			v1 = xxRound(v1, binary.LittleEndian.Uint64([]byte(s[0:8])))
			v2 = xxRound(v2, binary.LittleEndian.Uint64([]byte(s[8:16])))
			v3 = xxRound(v3, binary.LittleEndian.Uint64([]byte(s[16:24])))
			v4 = xxRound(v4, binary.LittleEndian.Uint64([]byte(s[24:32])))
			s = s[32:]
		}
		h = bits.RotateLeft64(v1, 1) + bits.RotateLeft64(v2, 7) + bits.RotateLeft64(v3, 12) +
			bits.RotateLeft64(v4, 18)
		h = xxMerge(h, v1)
		h = xxMerge(h, v2)
		h = xxMerge(h, v3)
		h = xxMerge(h, v4)
	} else {
		h = seed + xxPrime5
	}
	h += uint64(n)
	for len(s) >= 8 {
		h ^= xxRound(0, binary.LittleEndian.Uint64([]byte(s[:8])))
		h = bits.RotateLeft64(h, 27)*xxPrime1 + xxPrime4
		s = s[8:]
	}
	if len(s) >= 4 {
		h ^= uint64(binary.LittleEndian.Uint32([]byte(s[:4]))) * xxPrime1
		h = bits.RotateLeft64(h, 23)*xxPrime2 + xxPrime3
		s = s[4:]
	}
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i]) * xxPrime5
		h = bits.RotateLeft64(h, 11) * xxPrime1
	}
	h ^= h >> 33
	h *= xxPrime2
	h ^= h >> 29
	h *= xxPrime3
	h ^= h >> 32
	return h
}
