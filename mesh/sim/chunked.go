package sim

// chunk is how many entries one block of a chunked list holds.
const chunk = 4096

// chunked is an append-only list of T kept in fixed blocks: appending never copies what it holds (a slice
// grown by append copies it all at each doubling, and a run records millions of calls and fault
// events), and a pointer to an entry stays valid for the run.
type chunked[T any] struct {
	blocks [][]T
	n      int
}

// add appends v and returns a pointer to the stored entry.
func (l *chunked[T]) add(v T) *T {
	b := l.n / chunk
	if b == len(l.blocks) {
		l.blocks = append(l.blocks, make([]T, 0, chunk))
	}
	l.blocks[b] = append(l.blocks[b], v)
	l.n++
	return &l.blocks[b][len(l.blocks[b])-1]
}

// len is how many entries it holds.
func (l *chunked[T]) len() int { return l.n }

// at is the i-th entry.
func (l *chunked[T]) at(i int) *T { return &l.blocks[i/chunk][i%chunk] }

// prefix copies the first n entries into a new slice.
func (l *chunked[T]) prefix(n int) []T {
	out := make([]T, 0, n)
	for _, b := range l.blocks {
		if len(out) == n {
			break
		}
		out = append(out, b[:min(len(b), n-len(out))]...)
	}
	return out
}

// all copies every entry into a new slice.
func (l *chunked[T]) all() []T { return l.prefix(l.n) }
