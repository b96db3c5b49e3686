package apimux

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// A daemon on a loopback address without api.admin_token_file generates a
// per-start admin token and writes it, readable by its own user only, to
//
//	$DIRSYNC_RUNTIME_DIR/admin-token-<port>
//
// ($DIRSYNC_RUNTIME_DIR defaults to $XDG_RUNTIME_DIR/dirsync, else
// <temp dir>/dirsync-<uid>). The dirsync CLI of the same user reads it to
// call a loopback daemon on that port; a web page cannot.

// PerStartTokenPath is where the daemon listening on port keeps its
// per-start token.
func PerStartTokenPath(getenv func(string) string, port string) string {
	dir := getenv("DIRSYNC_RUNTIME_DIR")
	if dir == "" {
		if x := getenv("XDG_RUNTIME_DIR"); x != "" {
			dir = filepath.Join(x, "dirsync")
		}
	}
	if dir == "" {
		dir = filepath.Join(os.TempDir(), fmt.Sprintf("dirsync-%d", os.Getuid()))
	}
	return filepath.Join(dir, "admin-token-"+port)
}

// WritePerStartToken writes t to path (mode 0600) in a directory it
// creates with mode 0700; it refuses a directory that is a symbolic link,
// belongs to another user or is open to others. It returns a function that
// removes the file if it still holds t.
func WritePerStartToken(path string, t Token) (remove func(), err error) {
	if t.IsZero() {
		return nil, errors.New("per-start token: no token to write")
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("per-start token: %w", err)
	}
	if err := checkPrivateDir(dir); err != nil {
		return nil, fmt.Errorf("per-start token: %w; remove it or set DIRSYNC_RUNTIME_DIR to a private directory", err)
	}
	f, err := os.CreateTemp(dir, ".admin-token-*")
	if err != nil {
		return nil, fmt.Errorf("per-start token: %w", err)
	}
	_, werr := f.Write(append(t.secret, '\n'))
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(f.Name(), path)
	}
	if werr != nil {
		os.Remove(f.Name())
		return nil, fmt.Errorf("per-start token: %w", werr)
	}
	return func() {
		if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == string(t.secret) {
			os.Remove(path)
		}
	}, nil
}

// ReadPerStartToken returns the per-start token at path, or "" when there
// is none.
func ReadPerStartToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("per-start token: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

func checkPrivateDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("%s belongs to uid %d, not to this user", dir, st.Uid)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s is open to other users (mode %04o)", dir, fi.Mode().Perm())
	}
	return nil
}
