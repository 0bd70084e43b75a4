package docker_test

import (
	"context"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/mesh/docker"
)

func TestDocker(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "mesh/docker Suite")
}

// The image the docker specs share: built by the first of them (so that a run without them builds
// nothing), removed after the suite.
var suiteImage struct {
	once sync.Once
	im   *docker.Image
	err  error
}

func sharedImage(ctx context.Context) string {
	GinkgoHelper()
	suiteImage.once.Do(func() {
		start := time.Now()
		suiteImage.im, suiteImage.err = docker.BuildImage(ctx, docker.ImageOptions{Labels: map[string]string{labelTest: "suite-image"}})
		if suiteImage.err == nil {
			GinkgoWriter.Printf("built %s in %s\n", suiteImage.im.Tag, time.Since(start).Round(time.Millisecond))
		}
	})
	Expect(suiteImage.err).NotTo(HaveOccurred(), "building the meshproof image")
	return suiteImage.im.Tag
}

var _ = AfterSuite(func(ctx SpecContext) {
	if suiteImage.im != nil {
		Expect(suiteImage.im.Remove(ctx)).To(Succeed())
	}
}, NodeTimeout(time.Minute))
