package tcp

import "github.com/meshproof/meshproof/faults/field"

// bandwidth paces the data at Rate KB/s at most.
type bandwidth struct{ Toxic }

var _ chunker = bandwidth{}

func (t bandwidth) check() []error {
	if t.Rate <= 0 {
		return []error{field.Errorf("rate", "%d is not positive, want > 0 KB/s", t.Rate)}
	}
	return nil
}

func (t bandwidth) chunk(c *chunk, _ *state) { c.rates = append(c.rates, t.Rate) }
