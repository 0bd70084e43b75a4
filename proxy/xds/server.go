package xds

import (
	"google.golang.org/protobuf/proto"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
)

// NewServer is the proxy server of a bootstrap whose configuration comes over xDS, not yet started:
// its admin and static clusters at once, its listeners with the first configuration the client
// applies through ServerApplier — as Envoy's workers start after its initialisation (the initial
// fetch, bounded by initial_fetch_timeout); /ready answers 503 INITIALIZING until then.
func NewServer(cfg *config.Bootstrap, opts proxy.Options) (*proxy.Server, error) {
	first := *cfg
	first.Listeners = nil
	srv, err := proxy.New(&first, opts)
	if err != nil {
		return nil, err
	}
	srv.SetInitializing(true)
	return srv, nil
}

// ServerApplier is the Applier of a proxy server made by NewServer: each configuration goes to
// srv.Update (whose refusal the client NACKs), and the first one it takes ends srv's initialisation.
// applied, when not nil, is called after each configuration srv took.
func ServerApplier(srv *proxy.Server, applied func(*config.Bootstrap)) Applier {
	return ApplierFunc(func(cfg *config.Bootstrap, raw proto.Message) error {
		if err := srv.Update(cfg, raw); err != nil {
			return err
		}
		srv.SetInitializing(false)
		if applied != nil {
			applied(cfg)
		}
		return nil
	})
}
