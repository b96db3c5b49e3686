package deploytest

import (
	"bufio"
	"debug/elf"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const dockerfilePath = "deployments/docker/Dockerfile"

// instruction is one Dockerfile instruction with continuation lines joined.
type instruction struct {
	cmd  string // upper-case: FROM, RUN, COPY, …
	args string
}

func parseDockerfile(t *testing.T) []instruction {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, dockerfilePath))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []instruction
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if more, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(more + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// dockerImage is what the final stage of the Dockerfile declares.
type dockerImage struct {
	finalBase   string
	buildRun    string // the RUN line with `go build`
	copyFrom    string // source of COPY --from=<build stage>
	binary      string // where that COPY puts the binary
	user        string
	expose      []string
	entrypoint  []string
	cmd         []string
	healthcheck []string // exec form after CMD
	env         map[string]string
}

func readDockerfile(t *testing.T) dockerImage {
	t.Helper()
	var img dockerImage
	img.env = map[string]string{}
	execForm := func(in instruction, s string) []string {
		var v []string
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			t.Fatalf("%s %s: not exec (JSON) form, which an image without a shell needs: %v", in.cmd, in.args, err)
		}
		return v
	}
	for _, in := range parseDockerfile(t) {
		switch in.cmd {
		case "FROM":
			img.finalBase = strings.Fields(in.args)[0]
		case "RUN":
			if strings.Contains(in.args, "go build") {
				img.buildRun = in.args
			}
		case "COPY":
			f := strings.Fields(in.args)
			if len(f) == 3 && strings.HasPrefix(f[0], "--from=") {
				img.copyFrom, img.binary = f[1], f[2]
			}
		case "USER":
			img.user = in.args
		case "EXPOSE":
			img.expose = strings.Fields(in.args)
		case "ENV":
			k, v, _ := strings.Cut(in.args, "=")
			img.env[k] = v
		case "ENTRYPOINT":
			img.entrypoint = execForm(in, in.args)
		case "CMD":
			img.cmd = execForm(in, in.args)
		case "HEALTHCHECK":
			_, after, ok := strings.Cut(in.args, "CMD ")
			if !ok {
				t.Fatalf("HEALTHCHECK %s: no CMD", in.args)
			}
			img.healthcheck = execForm(in, strings.TrimSpace(after))
		}
	}
	return img
}

// TestDockerfile checks the image the Dockerfile describes: built like
// `make build` (static), copied into a shell-less base, run as non-root,
// started with subcommands and flags the binary has.
func TestDockerfile(t *testing.T) {
	img := readDockerfile(t)
	c := inspectCLI(t)

	if !strings.Contains(img.finalBase, "distroless/static") && img.finalBase != "scratch" {
		t.Errorf("final stage FROM %s: want distroless/static or scratch (no shell, no libc needed)", img.finalBase)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/dirsync"} {
		if !strings.Contains(img.buildRun, want) {
			t.Errorf("build step %q lacks %s", img.buildRun, want)
		}
	}
	if !strings.Contains(img.buildRun, "-o "+img.copyFrom) {
		t.Errorf("COPY --from takes %s but the build step %q writes elsewhere", img.copyFrom, img.buildRun)
	}
	if u, _, _ := strings.Cut(img.user, ":"); u == "" || u == "0" || u == "root" {
		t.Errorf("USER %q: the image must run as a non-root user", img.user)
	}
	if len(img.entrypoint) != 1 || img.entrypoint[0] != img.binary {
		t.Errorf("ENTRYPOINT %q: want [%q]", img.entrypoint, img.binary)
	}
	if err := c.checkArgs(img.cmd); err != nil {
		t.Errorf("CMD %q: %v", img.cmd, err)
	}
	if cfg, ok := flagValue(img.cmd, "config"); !ok || img.env["DIRSYNC_CONFIG"] != cfg {
		t.Errorf("CMD --config %q and ENV DIRSYNC_CONFIG=%q should name the same file", cfg, img.env["DIRSYNC_CONFIG"])
	}
	if len(img.expose) != 1 {
		t.Fatalf("EXPOSE %q: want the API port", img.expose)
	}
}

// TestDockerHealthcheck: with no shell in the image, the HEALTHCHECK runs
// the binary itself, which must have that subcommand and probe a port the
// image exposes.
func TestDockerHealthcheck(t *testing.T) {
	img := readDockerfile(t)
	c := inspectCLI(t)
	hc := img.healthcheck
	if len(hc) < 2 || hc[0] != img.binary {
		t.Fatalf("HEALTHCHECK CMD %q: want the dirsync binary %s (the image has no shell or curl)", hc, img.binary)
	}
	if err := c.checkArgs(hc[1:]); err != nil {
		t.Fatalf("HEALTHCHECK CMD %q: %v\n(needed: `dirsync healthcheck --url URL`, which GETs URL with a short timeout and exits 0 on HTTP 200, 1 otherwise)", hc, err)
	}
	raw, ok := flagValue(hc[1:], "url")
	if !ok {
		t.Fatalf("HEALTHCHECK CMD %q: no --url", hc)
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if u.Port() != strings.TrimSuffix(img.expose[0], "/tcp") {
		t.Errorf("HEALTHCHECK probes port %s but the image exposes %s", u.Port(), img.expose[0])
	}
	if u.Path != "/healthz" {
		t.Errorf("HEALTHCHECK probes %s, want /healthz", u.Path)
	}

	// Against a real daemon: healthy exits 0, nothing listening exits
	// non-zero.
	d := startDaemon(t)
	live := append(append([]string{}, hc[1:]...), "--url", d.url("/healthz"))
	if out, err := exec.Command(c.bin, live...).CombinedOutput(); err != nil {
		t.Errorf("dirsync %s against a running daemon: %v\n%s", strings.Join(live, " "), err, out)
	}
	dead := append(append([]string{}, hc[1:]...), "--url", "http://"+freeAddr(t)+"/healthz")
	if out, err := exec.Command(c.bin, dead...).CombinedOutput(); err == nil {
		t.Errorf("dirsync %s with nothing listening exited 0\n%s", strings.Join(dead, " "), out)
	}
}

// TestStaticBinary: built as the Dockerfile builds it, the binary has no
// ELF interpreter and no dynamic section, so it runs on distroless/static
// or scratch.
func TestStaticBinary(t *testing.T) {
	bin := dirsyncBinary(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("binary has a %v program header: it is dynamically linked", p.Type)
		}
	}
	if libs, err := f.ImportedLibraries(); err == nil && len(libs) > 0 {
		t.Errorf("binary needs shared libraries %q", libs)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "dirsync deploytest" {
		t.Errorf("dirsync version: %v %q: the -X main.version ldflag did not apply", err, out)
	}
}
