package clock_test

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy/clock"
)

var epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func TestFakeFiresTimersInDeadlineOrderAsTimePasses(t *testing.T) {
	g := NewWithT(t)
	c := clock.NewFake(epoch)
	late, early := c.NewTimer(2*time.Second), c.NewTimer(time.Second)
	g.Expect(c.Waiters()).To(Equal(2))
	c.Step(999 * time.Millisecond)
	g.Expect(early.C()).NotTo(Receive())
	c.Step(time.Millisecond)
	g.Expect(early.C()).To(Receive(Equal(epoch.Add(time.Second))))
	g.Expect(late.C()).NotTo(Receive())
	g.Expect(late.Stop()).To(BeTrue())
	c.Step(time.Hour)
	g.Expect(late.C()).NotTo(Receive(), "stopped")
	g.Expect(c.Now()).To(Equal(epoch.Add(time.Hour + time.Second)))
	g.Expect(c.Since(epoch)).To(Equal(time.Hour + time.Second))
	g.Expect(c.Waiters()).To(BeZero())
}

func TestFakeTickerTicksEachPeriodAndDropsUntakenTicks(t *testing.T) {
	g := NewWithT(t)
	c := clock.NewFake(epoch)
	tk := c.NewTicker(100 * time.Millisecond)
	c.Step(350 * time.Millisecond) // ticks at 100, 200, 300: the channel holds the first
	g.Expect(tk.C()).To(Receive(Equal(epoch.Add(100 * time.Millisecond))))
	g.Expect(tk.C()).NotTo(Receive())
	c.Step(50 * time.Millisecond)
	g.Expect(tk.C()).To(Receive(Equal(epoch.Add(400 * time.Millisecond))))
	tk.Stop()
	c.Step(time.Second)
	g.Expect(tk.C()).NotTo(Receive())
}

func TestFakeAfterFuncRunsOnceDueAndNotWhenStopped(t *testing.T) {
	g := NewWithT(t)
	c := clock.NewFake(epoch)
	ran := make(chan time.Time, 2)
	c.AfterFunc(time.Second, func() { ran <- c.Now() })
	stopped := c.AfterFunc(time.Second, func() { ran <- time.Time{} })
	g.Expect(stopped.Stop()).To(BeTrue())
	c.Step(time.Second)
	g.Eventually(ran).Should(Receive(Equal(epoch.Add(time.Second))))
	g.Consistently(ran, 50*time.Millisecond).ShouldNot(Receive())
	g.Expect(c.NewTimer(0).C()).To(Receive(), "a timer of 0 fires at once")
}
