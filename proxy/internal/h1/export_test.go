package h1

// IdleAlive reports, for each idle connection of p (oldest first), whether the pool's liveness check
// takes it for reusable. It does not take the connections out of the pool.
func IdleAlive(p *Pool) []bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	alive := make([]bool, len(p.idle))
	for i, cc := range p.idle {
		alive[i] = cc.alive()
	}
	return alive
}
