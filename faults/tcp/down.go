package tcp

// down takes the proxy down while it is in force: the listener is closed (connections are
// refused) and the open connections are closed; removing it listens again on the same address.
type down struct{ Toxic }

var _ listenerToxic = down{}

func (down) check() []error { return nil }

func (down) listener() {}
