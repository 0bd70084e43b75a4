package tcp

import "github.com/meshproof/meshproof/faults/field"

// slicer cuts each chunk into slices of AverageSize ± SizeVariation bytes, Delay apart. Of several
// slicers on a direction, the first cuts.
type slicer struct{ Toxic }

var _ chunker = slicer{}

func (t slicer) check() []error {
	var errs []error
	if t.AverageSize <= 0 {
		errs = append(errs, field.Errorf("average_size", "%d is not positive, want > 0 bytes", t.AverageSize))
	}
	if t.SizeVariation < 0 || t.SizeVariation >= max(t.AverageSize, 1) {
		errs = append(errs, field.Errorf("size_variation", "%d is out of range, want 0..average_size-1", t.SizeVariation))
	}
	return errs
}

func (t slicer) chunk(c *chunk, s *state) {
	if c.slicer == nil {
		c.slicer, c.slicerRand = &t, s.rng
	}
}
