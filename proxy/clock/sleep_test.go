package clock_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy/clock"
)

func TestSleep(t *testing.T) {
	tests := []struct {
		name     string
		give     time.Duration
		cancelAt time.Duration // 0 = never
		want     bool
		wantTook time.Duration
	}{
		{"waits the whole delay", 2 * time.Second, 0, true, 2 * time.Second},
		{"ends early when the context ends", 2 * time.Second, 500 * time.Millisecond, false, 500 * time.Millisecond},
		{"no delay, live context", 0, 0, true, 0},
		{"negative delay is none", -time.Second, 0, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				g := gomega.NewWithT(t)
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				if tt.cancelAt > 0 {
					time.AfterFunc(tt.cancelAt, cancel)
				}
				began := time.Now()
				g.Expect(clock.Sleep(ctx, clock.Real{}, tt.give)).To(gomega.Equal(tt.want))
				g.Expect(time.Since(began)).To(gomega.Equal(tt.wantTook))
			})
		})
	}
}

func TestSleepOnAnEndedContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	gomega.NewWithT(t).Expect(clock.Sleep(ctx, clock.Real{}, 0)).To(gomega.BeFalse())
}

func TestSleepOnAFakeClockWaitsForItsTime(t *testing.T) {
	g := gomega.NewWithT(t)
	fake := clock.NewFake(time.Unix(0, 0))
	done := make(chan bool)
	go func() { done <- clock.Sleep(context.Background(), fake, time.Second) }()
	g.Eventually(fake.Waiters).Should(gomega.Equal(1))
	fake.Step(999 * time.Millisecond)
	g.Consistently(done, 20*time.Millisecond).ShouldNot(gomega.Receive())
	fake.Step(time.Millisecond)
	g.Eventually(done).Should(gomega.Receive(gomega.BeTrue()))
}
