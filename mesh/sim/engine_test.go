package sim

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

var _ = Describe("Engine", func() {
	var (
		en  *Engine
		got []string
	)
	BeforeEach(func() {
		en = &Engine{}
		got = nil
	})
	at := func(d time.Duration, name string) Timer {
		return en.At(d, func() { got = append(got, name+"@"+en.Now().String()) })
	}

	It("runs events in time order, each at its instant", func() {
		at(3*time.Millisecond, "c")
		at(1*time.Millisecond, "a")
		at(2*time.Millisecond, "b")
		en.Run(-1)
		Expect(got).To(Equal([]string{"a@1ms", "b@2ms", "c@3ms"}))
		Expect(en.Events()).To(BeEquivalentTo(3))
	})

	It("runs simultaneous events in the order they were scheduled, those scheduled while running too", func() {
		for _, n := range []string{"x", "y", "z"} {
			at(time.Second, n)
		}
		en.At(time.Second, func() { at(time.Second, "late") })
		at(time.Second, "w")
		en.Run(-1)
		Expect(got).To(Equal([]string{"x@1s", "y@1s", "z@1s", "w@1s", "late@1s"}))
	})

	It("runs an event scheduled in the past at Now", func() {
		en.Run(5 * time.Second)
		at(time.Second, "past")
		en.Run(-1)
		Expect(got).To(Equal([]string{"past@5s"}))
	})

	It("stops until the given instant and leaves Now there", func() {
		at(time.Second, "a")
		at(3*time.Second, "b")
		en.Run(2 * time.Second)
		Expect(got).To(Equal([]string{"a@1s"}))
		Expect(en.Now()).To(Equal(2 * time.Second))
		Expect(en.Pending()).To(Equal(1))
	})

	It("cancels a timer once, and not after it ran", func() {
		t := at(time.Second, "stopped")
		ran := at(time.Second, "ran")
		Expect(en.Stop(t)).To(BeTrue())
		Expect(en.Stop(t)).To(BeFalse())
		en.Run(-1)
		Expect(got).To(Equal([]string{"ran@1s"}))
		Expect(en.Stop(ran)).To(BeFalse())
		Expect(en.Stop(Timer{})).To(BeFalse())
	})

	It("reuses the events: a stale timer cannot stop the event's next use", func() {
		old := at(time.Second, "first")
		en.Run(-1)
		fresh := at(2*time.Second, "second") // takes the released event
		Expect(en.Stop(old)).To(BeFalse())
		en.Run(-1)
		Expect(got).To(Equal([]string{"first@1s", "second@2s"}))
		Expect(en.Stop(fresh)).To(BeFalse())
	})

	It("keeps the order of many events scheduled out of order, with removals", func() {
		var timers []Timer
		for i := range 1000 {
			d := time.Duration((i*7919)%1000) * time.Microsecond
			timers = append(timers, en.At(d, func() { got = append(got, en.Now().String()) }))
		}
		for i := 0; i < 1000; i += 3 {
			en.Stop(timers[i])
		}
		en.Run(-1)
		Expect(got).To(HaveLen(1000 - 334))
		var last time.Duration
		for _, s := range got {
			d, err := time.ParseDuration(s)
			Expect(err).NotTo(HaveOccurred())
			Expect(d).To(BeNumerically(">=", last))
			last = d
		}
	})
})
