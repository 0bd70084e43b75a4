// Command stallserver is the stalling target of the coordinated-omission benchmark (mesh/load/bench): an HTTP
// server on loopback that answers at once, except that every request arriving during a stall is held
// until the stall ends. Stalls last --stall and start --offset after the first request, then every
// --period: with the defaults, [5s, 6s), [15s, 16s), [25s, 26s) — exactly three in a 30s run, 10% of
// the time. (nginx cannot stall like this, hence a Go server.)
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18090", "listen address (loopback)")
	period := flag.Duration("period", 10*time.Second, "time between stall starts")
	stall := flag.Duration("stall", time.Second, "stall length")
	offset := flag.Duration("offset", 5*time.Second, "first stall start, after the first request")
	flag.Parse()

	var once sync.Once
	var first time.Time
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		once.Do(func() { first = now })
		if since := now.Sub(first); since >= *offset {
			into := (since - *offset) % *period
			if into < *stall {
				t := time.NewTimer(*stall - into)
				select {
				case <-t.C:
				case <-r.Context().Done():
				}
				t.Stop()
			}
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "stallserver:", err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: time.Minute}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(l); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "stallserver:", err)
		os.Exit(1)
	}
}
