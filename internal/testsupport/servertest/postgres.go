package servertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a private PostgreSQL server: its own data directory (initdb),
// listening on 127.0.0.1 on a random port, password authentication, no
// system service involved. As root it runs as the postgres system user,
// because initdb and postgres refuse to run as root.
type Postgres struct {
	Port     int
	User     string
	Password string
	// DSN connects to the maintenance database "postgres" as User.
	DSN string
	// Dir holds the data directory (Dir/data), the socket and the log.
	Dir string

	binDir string
	cred   *syscall.Credential
	proc   *Process
}

// StartPostgres starts a private server that is stopped, and its files
// removed, when t ends. Tests of one package should rather share one server
// (see SharedPostgres) and take a fresh database each (CreateDatabase).
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	p, err := ProvisionPostgres()
	if errors.Is(err, ErrUnavailable) {
		Unavailable(t, "postgres: %v", err)
	}
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// ProvisionPostgres creates a cluster in a new temporary directory and
// starts it. The caller must call Close. An error wrapping ErrUnavailable
// means PostgreSQL cannot run on this machine.
func ProvisionPostgres() (_ *Postgres, err error) {
	binDir, err := postgresBinDir()
	if err != nil {
		return nil, err
	}
	p := &Postgres{binDir: binDir, User: "postgres"}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("%w: running as root needs the postgres system user (created by the postgresql package): %v", ErrUnavailable, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	// Not t.TempDir: its parents are 0700 root directories the postgres
	// user could not enter.
	if p.Dir, err = os.MkdirTemp("", "dirsync-pg-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	if p.cred != nil {
		if err := os.Chown(p.Dir, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			return nil, err
		}
	}
	secret := make([]byte, 12)
	_, _ = rand.Read(secret)
	p.Password = hex.EncodeToString(secret)
	pwfile := filepath.Join(p.Dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(p.Password+"\n"), 0o600); err != nil {
		return nil, err
	}
	if p.cred != nil {
		if err := os.Chown(pwfile, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			return nil, err
		}
	}
	initdb := exec.Command(filepath.Join(binDir, "initdb"), "-D", filepath.Join(p.Dir, "data"),
		"-U", p.User, "--pwfile", pwfile, "--auth", "scram-sha-256", "-E", "UTF8", "--locale", "C", "--no-sync")
	initdb.Dir = p.Dir
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w: %s", err, tail(out))
	}
	_ = os.Remove(pwfile)
	if err := p.start(); err != nil {
		return nil, err
	}
	return p, nil
}

// postgresBinDir finds the directory of initdb and postgres: Debian keeps
// them in /usr/lib/postgresql/<version>/bin (newest version wins), outside
// PATH. When missing, it installs the postgresql package as root.
func postgresBinDir() (string, error) {
	find := func() string {
		dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
		sort.Slice(dirs, func(i, j int) bool { return pgVersion(dirs[i]) > pgVersion(dirs[j]) })
		for _, d := range dirs {
			if isFile(filepath.Join(d, "initdb")) && isFile(filepath.Join(d, "postgres")) {
				return d
			}
		}
		if initdb, err := exec.LookPath("initdb"); err == nil {
			if real, err := filepath.EvalSymlinks(initdb); err == nil && isFile(filepath.Join(filepath.Dir(real), "postgres")) {
				return filepath.Dir(real)
			}
		}
		return ""
	}
	if d := find(); d != "" {
		return d, nil
	}
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("%w: PostgreSQL server binaries (initdb, postgres) not found; install them with: sudo apt-get install -y postgresql", ErrUnavailable)
	}
	if err := aptInstall("postgresql"); err != nil {
		return "", fmt.Errorf("%w: apt-get install postgresql failed: %v", ErrUnavailable, err)
	}
	if d := find(); d != "" {
		return d, nil
	}
	return "", fmt.Errorf("%w: initdb still missing after apt-get install postgresql", ErrUnavailable)
}

func pgVersion(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir()
}

// start runs postgres on a new random port and waits until it accepts
// queries.
func (p *Postgres) start() error {
	port, err := freePort()
	if err != nil {
		return err
	}
	p.Port = port
	p.DSN = fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/postgres?sslmode=disable", p.User, p.Password, p.Port)
	args := []string{
		"-D", filepath.Join(p.Dir, "data"), "-p", strconv.Itoa(p.Port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=" + p.Dir,
		"-c", "max_connections=200", "-c", "shared_buffers=32MB",
		// Durability against the OS crashing is not what tests exercise;
		// a killed server still recovers everything from its WAL.
		"-c", "fsync=off", "-c", "full_page_writes=off",
		"-c", "log_min_messages=warning",
	}
	proc, err := startAs(p.Dir, p.cred, filepath.Join(p.binDir, "postgres"), args...)
	if err != nil {
		return err
	}
	p.proc = proc
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, p.DSN)
		if err == nil {
			err = conn.Ping(ctx)
			conn.Close(ctx)
		}
		cancel()
		if err == nil {
			return nil
		}
		if proc.Exited() || time.Now().After(deadline) {
			p.stop()
			return fmt.Errorf("postgres did not start: %v; log: %s", err, proc.LogTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop shuts the server down fast (SIGINT: clients disconnected, a
// checkpoint written), killing it if it takes more than 10 s.
func (p *Postgres) stop() {
	if p.proc == nil || p.proc.Exited() {
		return
	}
	_ = p.proc.Signal(syscall.SIGINT)
	select {
	case <-p.proc.done:
	case <-time.After(10 * time.Second):
		p.proc.Kill()
	}
}

// Restart stops the server and starts it again on a new port with the same
// data; DSN changes accordingly.
func (p *Postgres) Restart(t testing.TB) {
	t.Helper()
	p.stop()
	if err := p.start(); err != nil {
		t.Fatalf("postgres restart: %v", err)
	}
}

// Crash kills the server without a shutdown checkpoint (SIGKILL) and starts
// it again: it recovers from its WAL, as after a crash. DSN changes.
func (p *Postgres) Crash(t testing.TB) {
	t.Helper()
	p.proc.Kill()
	// Kill waits for the postmaster only; until its killed backends have
	// exited too, the old shared memory block is still attached and a new
	// postmaster refuses to start ("pre-existing shared memory block").
	for attempt := 1; ; attempt++ {
		err := p.start()
		if err == nil {
			return
		}
		if attempt < 100 && strings.Contains(err.Error(), "pre-existing shared memory block") {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		t.Fatalf("postgres restart after crash: %v", err)
	}
}

// Close stops the server and removes its files.
func (p *Postgres) Close() {
	p.stop()
	if p.Dir != "" {
		_ = os.RemoveAll(p.Dir)
	}
}

// CreateDatabase creates a new empty database and returns its DSN, so tests
// sharing one server do not see each other's tables.
func (p *Postgres) CreateDatabase(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.DSN)
	if err != nil {
		t.Fatalf("postgres: connect: %v", err)
	}
	defer conn.Close(ctx)
	suffix := make([]byte, 6)
	_, _ = rand.Read(suffix)
	name := "test_" + hex.EncodeToString(suffix)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("postgres: create database: %v", err)
	}
	return p.DatabaseDSN(name)
}

// DatabaseDSN is the DSN of database name on this server (it follows the
// port after a restart).
func (p *Postgres) DatabaseDSN(name string) string {
	return strings.Replace(p.DSN, "/postgres?", "/"+name+"?", 1)
}

// SharedPostgres starts one server on first use and shares it between the
// tests of one test binary. Close it from TestMain after m.Run.
type SharedPostgres struct {
	once sync.Once
	pg   *Postgres
	err  error
}

// Get returns the shared server, starting it on the first call. It skips t
// when PostgreSQL is unavailable (fails it with DIRSYNC_REQUIRE_INTEGRATION=1).
func (sh *SharedPostgres) Get(t testing.TB) *Postgres {
	t.Helper()
	sh.once.Do(func() { sh.pg, sh.err = ProvisionPostgres() })
	if errors.Is(sh.err, ErrUnavailable) {
		Unavailable(t, "postgres: %v", sh.err)
	}
	if sh.err != nil {
		t.Fatalf("postgres: %v", sh.err)
	}
	return sh.pg
}

// Close stops the server if it was started.
func (sh *SharedPostgres) Close() {
	if sh.pg != nil {
		sh.pg.Close()
	}
}

// startAs is Start with the process running under cred (nil: as us).
func startAs(dir string, cred *syscall.Credential, name string, args ...string) (*Process, error) {
	logPath := filepath.Join(dir, "server.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Cmd: cmd, Dir: dir, Log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// freePort is FreePort without a test to fail.
func freePort() (int, error) { return reservePort() }
