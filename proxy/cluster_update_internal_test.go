package proxy

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy/clock"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/stats"
)

// edsCluster is an EDS cluster of addrs, as the tests below build it.
func edsCluster(addrs ...string) config.Cluster {
	c := config.Cluster{Name: "svc", EDS: &config.EDS{ServiceName: "svc"}, LbPolicy: "ROUND_ROBIN"}
	for _, a := range addrs {
		c.Endpoints = append(c.Endpoints, config.Endpoint{Address: a, Weight: 1})
	}
	return c
}

// Regression (#17 review): commit marked the hosts an update removed before the server stored the new
// configuration, so a request that arrived in between, given the old one, found no host after a full
// replacement ("no healthy upstream"). Between commit and inUse, the old cluster's attempts pick from
// the new host set, and no host is marked removed before the configuration is in use.
func TestCommitThenInUse(t *testing.T) {
	g := gomega.NewWithT(t)
	old, err := newCluster(edsCluster("127.0.0.1:1"), stats.NewStore(), nil, clock.NewFake(time.Unix(0, 0)), seeds{})
	g.Expect(err).NotTo(gomega.HaveOccurred())
	defer old.close()
	n, err := old.carry(edsCluster("127.0.0.1:2"))
	g.Expect(err).NotTo(gomega.HaveOccurred())
	defer n.close()

	n.commit()
	x := old.hosts[0]
	g.Expect(x.removed.Load()).To(gomega.BeFalse(), "removed before the configuration is in use")
	cl := old.newest()
	g.Expect(cl).To(gomega.BeIdenticalTo(n))
	i := cl.pick(0, nil, nil, rand.New(rand.NewPCG(1, 2)))
	g.Expect(i).To(gomega.Equal(0))
	g.Expect(cl.hosts[i].addr).To(gomega.Equal("127.0.0.1:2"))

	n.inUse()
	g.Expect(x.removed.Load()).To(gomega.BeTrue())
}
