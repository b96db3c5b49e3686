package servertest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Redis is a private redis-server on a loopback port.
type Redis struct {
	Addr string
	Dir  string
	proc *Process
	port int
}

// StartRedis starts redis-server with no persistence in a temp dir; it is
// stopped when t ends.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin := Require(t, "redis-server", "redis-server")
	r := &Redis{Dir: t.TempDir(), port: FreePort(t)}
	r.Addr = fmt.Sprintf("127.0.0.1:%d", r.port)
	if err := r.start(bin); err != nil {
		t.Fatalf("redis: %v", err)
	}
	t.Cleanup(r.Kill) // the current process, also after Restart
	return r
}

func (r *Redis) start(bin string) error {
	conf := filepath.Join(r.Dir, "redis.conf")
	body := fmt.Sprintf("bind 127.0.0.1\nport %d\ndir %s\nsave \"\"\nappendonly no\nprotected-mode yes\nlazyfree-lazy-server-del yes\n", r.port, r.Dir)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		return err
	}
	p, err := Start(r.Dir, bin, conf)
	if err != nil {
		return err
	}
	r.proc = p
	if err := WaitTCP(r.Addr, 10*time.Second); err != nil {
		p.Kill()
		return fmt.Errorf("%w; log: %s", err, p.LogTail())
	}
	return nil
}

// Restart kills the server (losing all data, as after a crash without
// persistence) and starts it again on the same port.
func (r *Redis) Restart(t testing.TB) {
	t.Helper()
	r.proc.Kill()
	bin, err := LookBinary("redis-server")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.start(bin); err != nil {
		t.Fatalf("redis restart: %v", err)
	}
}

// Kill stops the server without restarting it.
func (r *Redis) Kill() { r.proc.Kill() }
