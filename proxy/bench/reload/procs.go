package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procs are the processes the bench started; stopAll ends them (TERM, then KILL after 5 s).
type procs struct {
	cmds []*exec.Cmd
	done []chan struct{}
}

// start starts name with args pinned to cpus (taskset execs its command: the process is the command
// itself), its output in logPath.
func (ps *procs) start(cpus string, env []string, logPath string, name string, args ...string) (*exec.Cmd, error) {
	log, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("taskset", append([]string{"-c", cpus, name}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); log.Close(); close(done) }()
	ps.cmds, ps.done = append(ps.cmds, cmd), append(ps.done, done)
	return cmd, nil
}

func (ps *procs) stopAll() {
	for _, c := range ps.cmds {
		_ = c.Process.Signal(syscall.SIGTERM)
	}
	for i, c := range ps.cmds {
		select {
		case <-ps.done[i]:
		case <-time.After(5 * time.Second):
			_ = c.Process.Kill()
			<-ps.done[i]
		}
	}
}

// exited says whether the i-th process has ended.
func (ps *procs) exited(c *exec.Cmd) bool {
	for i, x := range ps.cmds {
		if x == c {
			select {
			case <-ps.done[i]:
				return true
			default:
			}
		}
	}
	return false
}

// waitOK waits until url answers 200 (10 s at most).
func waitOK(ctx context.Context, url string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not answer 200: %w", url, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// getJSON decodes url's JSON answer into v.
func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// adminStats reads the admin's /stats (filtered by the regular expression filter) as name → value.
func adminStats(admin, filter string) (map[string]int64, error) {
	resp, err := http.Get("http://" + admin + "/stats?filter=" + url.QueryEscape(filter))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("admin /stats: status %d", resp.StatusCode)
	}
	out := map[string]int64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ": ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseInt(strings.TrimSpace(value), 10, 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}

// cpuNanos is the CPU time all of pid's threads ran, from /proc/<pid>/task/*/schedstat.
func cpuNanos(pid int) (int64, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("no schedstat for pid %d", pid)
	}
	var sum int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // a thread that ended
		}
		f := strings.Fields(string(b))
		if len(f) > 0 {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			sum += n
		}
	}
	return sum, nil
}

// listenInode is the inode of the socket pid listens on at 127.0.0.1:port, from /proc/<pid>/net/tcp
// (state 0A, LISTEN) and pid's descriptors: the same inode before and after means the same socket.
func listenInode(pid, port int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		return "", err
	}
	want := fmt.Sprintf("0100007F:%04X", port)
	inode := ""
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 9 && f[1] == want && f[3] == "0A" {
			inode = f[9]
		}
	}
	if inode == "" {
		return "", fmt.Errorf("nothing listens on 127.0.0.1:%d", port)
	}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && l == "socket:["+inode+"]" {
			return inode, nil
		}
	}
	return "", errors.New("the socket listening on the port is not the proxy's")
}
