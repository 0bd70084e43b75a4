package docker_test

import (
	"context"
	"os"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gleak"

	"github.com/meshproof/meshproof/mesh/docker"
)

func TestDocker(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "mesh/docker Suite")
}

// Every spec must end the goroutines it started: checked after its own cleanups (gleak; this cleanup,
// registered first, runs last).
var _ = BeforeEach(func() {
	baseline := gleak.Goroutines()
	DeferCleanup(func() {
		Eventually(gleak.Goroutines).WithTimeout(5 * time.Second).ShouldNot(gleak.HaveLeaked(baseline))
	})
})

// imageBuildBudget bounds the one image build of the suite. A cold Go build cache makes the static
// binary alone take about 2 minutes on two cores (99 s measured alone, more beside other suites), so
// the build has its own budget, apart from any spec's (issue #18: it once ran inside a 2-minute spec
// timeout, and a failure was cached for every later spec).
const imageBuildBudget = 15 * time.Minute

// suiteImage is the tag of the image the docker specs share, built once before the suite on the first
// parallel process, when the docker specs run at all and Docker is reachable; "" otherwise (the docker
// specs then skip, or fail under MESHPROOF_REQUIRE_DOCKER=1, in their BeforeEach).
var suiteImage string

var builtImage *docker.Image // on the process that built it

var _ = SynchronizedBeforeSuite(func(ctx SpecContext) []byte {
	if !Label("docker").MatchesLabelFilter(GinkgoLabelFilter()) {
		return nil // the docker specs are filtered out: build nothing
	}
	hctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err := docker.Available(hctx)
	cancel()
	if err != nil {
		if os.Getenv("MESHPROOF_REQUIRE_DOCKER") == "1" {
			Fail("Docker is unreachable and MESHPROOF_REQUIRE_DOCKER=1: " + err.Error())
		}
		return nil
	}
	start := time.Now()
	im, err := docker.BuildImage(ctx, docker.ImageOptions{Labels: map[string]string{labelTest: "suite-image"}})
	Expect(err).NotTo(HaveOccurred(), "building the meshproof image")
	GinkgoWriter.Printf("built %s in %s\n", im.Tag, time.Since(start).Round(time.Millisecond))
	builtImage = im
	return []byte(im.Tag)
}, func(tag []byte) {
	suiteImage = string(tag)
}, NodeTimeout(imageBuildBudget))

var _ = SynchronizedAfterSuite(func() {}, func(ctx SpecContext) {
	if builtImage != nil {
		Expect(builtImage.Remove(ctx)).To(Succeed())
	}
}, NodeTimeout(time.Minute))

// sharedImage returns the suite's image; the spec fails when Docker was reachable but gave no image.
func sharedImage() string {
	GinkgoHelper()
	Expect(suiteImage).NotTo(BeEmpty(), "the suite built no image although Docker is reachable (see SynchronizedBeforeSuite)")
	return suiteImage
}
