package proxycmd

import (
	"context"
	"fmt"
	"io"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/xds"
)

// runXDS runs the xDS client of a bootstrap with dynamic_resources in the background until ctx ends
// (done is closed then): every configuration it builds is applied to srv with Server.Update, whose
// refusal the client NACKs. A NACK and a refused configuration are printed to stderr.
func runXDS(ctx context.Context, cfg *config.Bootstrap, raw *bootstrapv3.Bootstrap, srv *proxy.Server, out *listenerPrinter,
	stderr io.Writer, done chan<- struct{}) error {
	client, err := xds.New(xds.Options{
		Bootstrap: raw,
		Config:    cfg,
		Applier:   xds.ServerApplier(srv, out.print),
		Stats:     srv.Stats(),
		OnEvent: func(e xds.Event) {
			switch e.Kind {
			case xds.EventNACK, xds.EventApplyFailed:
				fmt.Fprintf(stderr, "meshproof: xds: %s %s %s: %s\n", e.Kind, e.TypeURL, e.Version, e.Detail)
			}
		},
	})
	if err != nil {
		return err
	}
	go func() {
		defer close(done)
		_ = client.Run(ctx)
	}()
	return nil
}
