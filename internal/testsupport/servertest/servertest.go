// Package servertest starts real servers (redis-server, slapd, Samba AD,
// PostgreSQL) on loopback for integration tests, each in a private temporary
// directory, stopped when the test (or test binary) ends.
//
// A missing server binary is installed with apt-get when running as root on
// Debian; otherwise the test is skipped with a message that says how to
// install it. With DIRSYNC_REQUIRE_INTEGRATION=1 (as in CI) a server that
// cannot be had fails the test instead of skipping it.
package servertest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RequireEnv is the variable that turns skips into failures.
const RequireEnv = "DIRSYNC_REQUIRE_INTEGRATION"

// Unavailable skips t, or fails it when integration tests are required.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%s (%s=1: integration servers are required)", msg, RequireEnv)
	}
	t.Skip(msg)
}

// LookBinary returns the path of a server binary, searching PATH and the
// sbin directories Debian installs daemons into.
func LookBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := dir + "/" + name
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// Require returns the path of binary, installing packages with apt-get when
// it is missing and the process runs as root. Otherwise it skips (or fails,
// see Unavailable).
func Require(t testing.TB, binary string, packages ...string) string {
	t.Helper()
	if p, err := LookBinary(binary); err == nil {
		return p
	}
	if os.Geteuid() != 0 {
		Unavailable(t, "%s is not installed; install it with: sudo apt-get install -y %s", binary, strings.Join(packages, " "))
		return ""
	}
	if err := aptInstall(packages...); err != nil {
		Unavailable(t, "%s is not installed and apt-get failed: %v", binary, err)
		return ""
	}
	p, err := LookBinary(binary)
	if err != nil {
		Unavailable(t, "%s still missing after apt-get install %s", binary, strings.Join(packages, " "))
	}
	return p
}

// aptInstall installs packages, serialised across test binaries with a lock
// file because dpkg allows one installer at a time.
func aptInstall(packages ...string) error {
	lock, err := os.OpenFile("/tmp/dirsync-apt.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	run := func(args ...string) error {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get %s: %w: %s", strings.Join(args, " "), err, tail(out))
		}
		return nil
	}
	args := append([]string{"install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=600"}, packages...)
	if err := run(args...); err == nil {
		return nil
	}
	if err := run("update", "-q"); err != nil {
		return err
	}
	return run(args...)
}

func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = "…" + s[len(s)-2000:]
	}
	return s
}

// FreePort returns a TCP port on 127.0.0.1 for a server to listen on. See
// reservePort: ports are taken below the kernel's ephemeral range and
// reserved across test processes, so two harnesses (in parallel test
// binaries) never get the same port and no outgoing connection takes it.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := reservePort()
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	return port
}

// Ports reserved by this process: their lock files stay open (and locked)
// until the process exits. Test-harness state, deliberately process-wide.
var (
	reservedMu sync.Mutex
	reserved   []*os.File
)

// reservePort picks a random port in [20000, 32000) (below Linux's
// ephemeral range, so bind(0) and outgoing connections never use it) that
// no other test process holds a lock on and that can be bound now.
func reservePort() (int, error) {
	dir := filepath.Join(os.TempDir(), "dirsync-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return 0, err
	}
	for range 200 {
		port := 20000 + rand.IntN(12000)
		f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			return 0, err
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			f.Close() // another test process holds it
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			f.Close() // in use by something else
			continue
		}
		l.Close()
		reservedMu.Lock()
		reserved = append(reserved, f)
		reservedMu.Unlock()
		return port, nil
	}
	return 0, errors.New("no free port in 20000-32000 after 200 tries")
}

// WaitTCP waits until addr accepts connections or timeout passes.
func WaitTCP(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting connections after %v: %w", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Process is a server started by a test.
type Process struct {
	Cmd  *exec.Cmd
	Dir  string
	Log  string // path of its combined output
	done chan struct{}
	err  error
}

// Start runs a server command with output to a log file in dir. The caller
// stops it with Stop (or Kill); the process is also killed if the test
// binary's t.Cleanup runs first.
func Start(dir, name string, args ...string) (*Process, error) {
	return startAs(dir, nil, name, args...)
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process group.
func (p *Process) Signal(sig syscall.Signal) error {
	return syscall.Kill(-p.Cmd.Process.Pid, sig)
}

// Stop sends SIGTERM, waits up to 10 s, then kills. It waits for the
// process to be reaped.
func (p *Process) Stop() {
	if p.Exited() {
		return
	}
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// Kill sends SIGKILL and waits for the process to be reaped.
func (p *Process) Kill() {
	if p.Exited() {
		return
	}
	_ = p.Signal(syscall.SIGKILL)
	<-p.done
}

// Wait blocks until the process ends and returns its exit error.
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// LogTail returns the end of the server's log, for failure messages.
func (p *Process) LogTail() string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return err.Error()
	}
	return tail(b)
}

// ErrExited is returned when a server exits during start-up.
var ErrExited = errors.New("server exited during start-up")
