package stats

// OnSnapshotCopied sets the function a snapshot of h calls once it has copied h and let go of its lock.
func OnSnapshotCopied(h *Histogram, f func()) { h.copied = f }
