package docker

import (
	"archive/tar"
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/google/uuid"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	tclog "github.com/testcontainers/testcontainers-go/log"
)

// dockerfile is mesh/docker/Dockerfile, the one `make image` builds.
//
//go:embed Dockerfile
var dockerfile []byte

// MainPackage is the import path of the meshproof command, which BuildBinary builds.
const MainPackage = "github.com/meshproof/meshproof/cmd/meshproof"

// ImageRepo is the repository of the images BuildImage tags when ImageOptions.Tag is empty.
const ImageRepo = "meshproof-run"

// LabelRun is set on every container, network and image a run or BuildImage creates, to the run's id.
const LabelRun = "io.meshproof.run"

// LabelBuild is set on every layer BuildImage creates, intermediate ones included, to the build's id
// (the Dockerfile's MESHPROOF_BUILD argument).
const LabelBuild = "io.meshproof.build"

// ImageOptions configure BuildImage.
type ImageOptions struct {
	// Binary is a static Linux meshproof binary for the daemon's architecture. "" = this executable when it
	// is one (a CGO_ENABLED=0 build of cmd/meshproof), else BuildBinary into a temporary directory.
	Binary string
	// Tag names the image, e.g. "meshproof:dev"; "" = ImageRepo:<random id>.
	Tag string
	// Labels are added to the image.
	Labels map[string]string
	// Log receives the build output; nil discards it.
	Log io.Writer
}

// Image is an image built by BuildImage.
type Image struct {
	Tag string
	ID  string // the build id, in its LabelRun and LabelBuild labels
}

// BuildImage builds the meshproof image FROM scratch with the daemon's classic builder (nothing is
// pulled) from a context holding the Dockerfile and the binary. Remove it when done.
func BuildImage(ctx context.Context, opts ImageOptions) (*Image, error) {
	dockerEnv()
	provider, err := testcontainers.NewDockerProvider(testcontainers.WithLogger(logger(opts.Log)))
	if err != nil {
		return nil, fmt.Errorf("docker: %w", err)
	}
	defer provider.Close()

	bin := opts.Binary
	if bin == "" {
		arch, err := daemonArch(ctx, provider.Client())
		if err != nil {
			return nil, err
		}
		if self, ok := staticSelf(arch); ok {
			bin = self
		} else {
			dir, err := os.MkdirTemp("", "meshproof-bin-")
			if err != nil {
				return nil, err
			}
			defer os.RemoveAll(dir)
			if bin, err = BuildBinary(ctx, dir, arch); err != nil {
				return nil, err
			}
		}
	}
	tarball, err := buildContext(bin)
	if err != nil {
		return nil, err
	}
	defer os.Remove(tarball.Name())
	defer tarball.Close()

	id := uuid.NewString()[:8]
	repo, tag := ImageRepo, id
	if opts.Tag != "" {
		repo, tag = opts.Tag, "latest"
		if i := strings.LastIndex(opts.Tag, ":"); i > strings.LastIndex(opts.Tag, "/") {
			repo, tag = opts.Tag[:i], opts.Tag[i+1:]
		}
	}
	labels := maps.Clone(opts.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	if _, ok := labels[LabelOwner]; !ok {
		labels[LabelOwner] = owner()
	}
	if run, ok := labels[LabelRun]; ok {
		id = run // built for that run
	} else {
		labels[LabelRun] = id
	}
	buildLog := opts.Log
	if buildLog == nil {
		buildLog = io.Discard
	}
	req := testcontainers.ContainerRequest{FromDockerfile: testcontainers.FromDockerfile{
		ContextArchive: tarball,
		Dockerfile:     "Dockerfile",
		Repo:           repo,
		Tag:            tag,
		BuildLogWriter: buildLog,
		BuildArgs:      map[string]*string{"MESHPROOF_BUILD": &id},
		BuildOptionsModifier: func(o *client.ImageBuildOptions) {
			o.Labels = labels // KeepImage false: testcontainers adds its session labels to these
		},
	}}
	built, err := provider.BuildImage(ctx, &req)
	if err != nil {
		// A build that failed or was cancelled half-way leaves its intermediate images, and maybe the
		// tagged one: remove them all.
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		return nil, errors.Join(fmt.Errorf("docker: build image: %w", err), removeImage(cctx, provider.Client(), repo+":"+tag),
			removeBuild(cctx, provider.Client(), id))
	}
	return &Image{Tag: built, ID: id}, nil
}

// removeBuild removes every image carrying the build's label. The daemon may still be committing the
// step it was on when the client went away, so it looks again until it finds nothing.
func removeBuild(ctx context.Context, cli client.APIClient, id string) error {
	byBuild := make(client.Filters).Add("label", LabelBuild+"="+id)
	for range 20 {
		ims, err := cli.ImageList(ctx, client.ImageListOptions{All: true, Filters: byBuild})
		if err != nil {
			return fmt.Errorf("docker: list images of build %s: %w", id, err)
		}
		if len(ims.Items) == 0 {
			return nil
		}
		for _, im := range ims.Items {
			if err := removeImage(ctx, cli, im.ID); err != nil && !strings.Contains(err.Error(), "conflict") {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("docker: images of build %s keep appearing", id)
}

// Remove deletes the image and its untagged parent layers (the classic builder's intermediate images).
func (im *Image) Remove(ctx context.Context) error {
	dockerEnv()
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return fmt.Errorf("docker: %w", err)
	}
	defer cli.Close()
	return errors.Join(removeImage(ctx, cli, im.Tag), removeBuild(ctx, cli, im.ID))
}

func removeImage(ctx context.Context, cli client.APIClient, ref string) error {
	_, err := cli.ImageRemove(ctx, ref, client.ImageRemoveOptions{Force: true, PruneChildren: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("docker: remove image %s: %w", ref, err)
	}
	return nil
}

// BuildBinary builds a static (CGO_ENABLED=0) linux/arch meshproof binary into dir with the go command,
// from the current directory's module (which must be meshproof or require it), and returns its path.
// arch "" means the architecture of this process.
func BuildBinary(ctx context.Context, dir, arch string) (string, error) {
	if arch == "" {
		arch = goarch()
	}
	out := filepath.Join(dir, "meshproof")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, MainPackage)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("docker: go build %s (CGO_ENABLED=0 GOOS=linux GOARCH=%s): %w\n%s", MainPackage, arch, err, stderr.Bytes())
	}
	return out, nil
}

// staticSelf returns this executable when it is a CGO_ENABLED=0 linux/arch build of cmd/meshproof.
func staticSelf(arch string) (string, bool) {
	bi, ok := debug.ReadBuildInfo()
	if !ok || bi.Path != MainPackage {
		return "", false
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if settings["CGO_ENABLED"] != "0" || settings["GOOS"] != "linux" || settings["GOARCH"] != arch {
		return "", false
	}
	exe, err := os.Executable()
	if err != nil {
		return "", false
	}
	return exe, true
}

func goarch() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "GOARCH" {
				return s.Value
			}
		}
	}
	return "amd64"
}

// daemonArch is the daemon's architecture as GOARCH spells it.
func daemonArch(ctx context.Context, cli client.APIClient) (string, error) {
	v, err := cli.ServerVersion(ctx, client.ServerVersionOptions{})
	if err != nil {
		return "", fmt.Errorf("docker: server version: %w", err)
	}
	switch v.Arch {
	case "x86_64":
		return "amd64", nil
	case "aarch64":
		return "arm64", nil
	}
	return v.Arch, nil
}

// buildContext writes the build context, a tar of "Dockerfile" and "meshproof", to a temporary file.
func buildContext(binary string) (*os.File, error) {
	bin, err := os.Open(binary)
	if err != nil {
		return nil, fmt.Errorf("docker: binary: %w", err)
	}
	defer bin.Close()
	st, err := bin.Stat()
	if err != nil {
		return nil, fmt.Errorf("docker: binary: %w", err)
	}
	f, err := os.CreateTemp("", "meshproof-context-*.tar")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*os.File, error) {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("docker: build context: %w", err)
	}
	tw := tar.NewWriter(f)
	// Entry names without "./": testcontainers looks the Dockerfile up by its exact name.
	if err := tw.WriteHeader(&tar.Header{Name: "Dockerfile", Mode: 0o644, Size: int64(len(dockerfile)), Typeflag: tar.TypeReg}); err != nil {
		return fail(err)
	}
	if _, err := tw.Write(dockerfile); err != nil {
		return fail(err)
	}
	if err := tw.WriteHeader(&tar.Header{Name: "meshproof", Mode: 0o755, Size: st.Size(), Typeflag: tar.TypeReg}); err != nil {
		return fail(err)
	}
	if _, err := io.Copy(tw, bin); err != nil {
		return fail(err)
	}
	if err := tw.Close(); err != nil {
		return fail(err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fail(err)
	}
	return f, nil
}

// logger adapts a writer to testcontainers' logger; nil discards.
func logger(w io.Writer) tclog.Logger {
	if w == nil {
		return tclog.NewNoopLogger()
	}
	return printfLogger{w}
}

type printfLogger struct{ w io.Writer }

func (l printfLogger) Printf(format string, v ...any) {
	s := fmt.Sprintf(format, v...)
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	_, _ = io.WriteString(l.w, s)
}
