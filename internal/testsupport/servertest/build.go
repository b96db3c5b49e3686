package servertest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BuildDirsync builds cmd/dirsync into dir with extra `go build` flags (for
// example -race) and environment (for example CGO_ENABLED=0), for tests that
// run the real binary. It returns the binary's path.
func BuildDirsync(dir string, env []string, flags ...string) (string, error) {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	out := filepath.Join(dir, "dirsync")
	args := append(append([]string{"build"}, flags...), "-o", out, "./cmd/dirsync")
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/dirsync: %w\n%s", err, b)
	}
	return out, nil
}
