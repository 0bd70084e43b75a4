package docker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
)

// LabelOwner is set on every container, network and image a run or BuildImage creates, to the process
// that created it, "<hostname>:<pid>": a later run, or `meshproof clean`, removes what a process that is
// gone left behind (killed with SIGKILL, or its machine restarted mid-run), and leaves alone what a
// running meshproof still uses.
const LabelOwner = "io.meshproof.owner"

// owner is this process's LabelOwner value.
func owner() string {
	host, _ := os.Hostname()
	return host + ":" + strconv.Itoa(os.Getpid())
}

// ownerGone reports whether the process named by a LabelOwner value has ended: it ran on this host and
// no process has its pid any more. A value from another host, or none, is not known to be gone.
func ownerGone(value string) bool {
	host, pid, ok := strings.Cut(value, ":")
	me, _ := os.Hostname()
	n, err := strconv.Atoi(pid)
	if !ok || err != nil || host != me || n <= 0 {
		return false
	}
	return errors.Is(syscall.Kill(n, 0), syscall.ESRCH)
}

// Swept counts what Sweep removed.
type Swept struct{ Containers, Networks, Images int }

func (s Swept) String() string {
	return fmt.Sprintf("%d containers, %d networks, %d images", s.Containers, s.Networks, s.Images)
}

// Sweep removes the containers, networks and images of meshproof runs (label LabelRun) whose creating
// process is gone (LabelOwner); with all, every one of them, in use or not, and those without an owner
// label. Removal goes containers first, then networks, then images.
func Sweep(ctx context.Context, all bool) (Swept, error) {
	dockerEnv()
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return Swept{}, fmt.Errorf("docker: %w", err)
	}
	defer cli.Close()
	return sweep(ctx, cli, all)
}

func sweep(ctx context.Context, cli client.APIClient, all bool) (Swept, error) {
	var (
		done Swept
		errs []error
	)
	stale := func(labels map[string]string) bool { return all || ownerGone(labels[LabelOwner]) }
	byRun := make(client.Filters).Add("label", LabelRun)
	cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: byRun})
	if err != nil {
		return done, fmt.Errorf("docker: list containers: %w", err)
	}
	for _, c := range cs.Items {
		if !stale(c.Labels) {
			continue
		}
		if _, err := cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("docker: remove container %s: %w", c.ID[:12], err))
			continue
		}
		done.Containers++
	}
	ns, err := cli.NetworkList(ctx, client.NetworkListOptions{Filters: byRun})
	if err != nil {
		return done, errors.Join(append(errs, fmt.Errorf("docker: list networks: %w", err))...)
	}
	for _, n := range ns.Items {
		if !stale(n.Labels) {
			continue
		}
		if _, err := cli.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{}); err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("docker: remove network %s: %w", n.Name, err))
			continue
		}
		done.Networks++
	}
	ims, err := cli.ImageList(ctx, client.ImageListOptions{All: true, Filters: byRun})
	if err != nil {
		return done, errors.Join(append(errs, fmt.Errorf("docker: list images: %w", err))...)
	}
	for _, im := range ims.Items {
		if !stale(im.Labels) {
			continue
		}
		if err := removeImage(ctx, cli, im.ID); err != nil && !strings.Contains(err.Error(), "conflict") {
			errs = append(errs, err)
			continue
		}
		done.Images++
	}
	return done, errors.Join(errs...)
}
