// Package docs_test keeps the operator documentation in docs/ true to the
// code: every config field is documented (and nothing else), and every
// subcommand and flag of the real binary appears in the docs.
package docs_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/entitlement/store"

	"github.com/dirsync/dirsync/internal/entitlement/mapper"

	"github.com/redis/go-redis/v9"
	"go.yaml.in/yaml/v3"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/directory/sources"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

// configPaths lists the dotted YAML path of every leaf field of t
// ("accounts[].directory.ldap.urls").
func configPaths(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		path := prefix + name
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct && ft != reflect.TypeOf(time.Time{}):
			out = append(out, configPaths(ft, path+".")...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			out = append(out, configPaths(ft.Elem(), path+"[].")...)
		default:
			out = append(out, path)
		}
	}
	return out
}

// docTableRE matches a reference table row: | `path` | …
var docTableRE = regexp.MustCompile("(?m)^\\| `([a-z_]+(?:\\[\\])?(?:\\.[a-z_]+(?:\\[\\])?)*)` \\|")

// schemaPaths lists every config field of the build: config.Config's and
// those of each source kind's section under accounts[].directory.
func schemaPaths(t *testing.T) []string {
	t.Helper()
	code := configPaths(reflect.TypeOf(config.Config{}), "")
	kinds := sources.Config()
	if len(kinds) < 3 {
		t.Fatalf("found %d source kinds (ldap, okta, ldif at least)", len(kinds))
	}
	for _, k := range kinds {
		code = append(code, configPaths(k.SectionType(), "accounts[].directory."+k.Key()+".")...)
	}
	return code
}

// TestConfigurationDocMatchesSchema fails when a config field exists in
// config.Config or a source kind's section but not in
// docs/configuration.md's reference tables, or the other way round.
func TestConfigurationDocMatchesSchema(t *testing.T) {
	doc, err := os.ReadFile("configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]int{}
	for _, m := range docTableRE.FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]]++
	}
	code := schemaPaths(t)
	if len(code) < 50 {
		t.Fatalf("found only %d config fields by reflection: the walker is broken", len(code))
	}
	for _, p := range code {
		switch documented[p] {
		case 0:
			t.Errorf("config field %s is not documented in docs/configuration.md (add a table row starting with | `%s` |)", p, p)
		case 1:
		default:
			t.Errorf("config field %s has %d rows in docs/configuration.md", p, documented[p])
		}
	}
	for p := range documented {
		if !slices.Contains(code, p) {
			t.Errorf("docs/configuration.md documents %s, which config.Config does not have", p)
		}
	}
}

// yamlBlockRE matches fenced YAML blocks.
var yamlBlockRE = regexp.MustCompile("(?s)```yaml\n(.*?)```")

// secretFileRE finds file references in an example config.
var secretFileRE = regexp.MustCompile(`(?m)(?:_file|ca_file|path): +(\S+)`)

// TestConfigurationExamplesAreValid validates every complete example in
// docs/configuration.md (and README.md) with config.Parse, creating the
// files they reference.
func TestConfigurationExamplesAreValid(t *testing.T) {
	for _, doc := range []string{"configuration.md", "../README.md"} {
		text, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, m := range yamlBlockRE.FindAllStringSubmatch(string(text), -1) {
			block := m[1]
			if !strings.Contains(block, "\naccounts:") && !strings.HasPrefix(block, "accounts:") {
				continue // a fragment
			}
			n++
			dir := t.TempDir()
			for _, f := range secretFileRE.FindAllStringSubmatch(block, -1) {
				p := f[1]
				if !filepath.IsAbs(p) {
					p = filepath.Join(dir, p)
				} else {
					// Absolute paths (README's /run/secrets/…) move under dir.
					p = filepath.Join(dir, p)
					block = strings.ReplaceAll(block, f[1], p)
				}
				if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte("s3cret\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := config.Parse([]byte(block), dir, fmt.Sprintf("%s example %d", doc, n), sources.Config(), func(string) string { return "" }); err != nil {
				t.Errorf("%s example %d is not a valid config:\n%v\n%s", doc, n, err, block)
			}
		}
		if doc == "configuration.md" && n < 3 {
			t.Errorf("%s: found %d complete examples, want AD, OpenLDAP and Okta", doc, n)
		}
	}
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// dirsyncBinary builds cmd/dirsync once per test binary.
func dirsyncBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dirsync-docs-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath, buildErr = servertest.BuildDirsync(dir, nil)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildPath != "" {
		os.RemoveAll(filepath.Dir(buildPath))
	}
	os.Exit(code)
}

var (
	commandLineRE = regexp.MustCompile(`(?m)^  ([a-z][a-z-]*)\s{2,}\S`)
	flagLineRE    = regexp.MustCompile(`(?m)^\s+-([a-z][a-z-]*)`)
	actionsRE     = regexp.MustCompile(`usage: dirsync [a-z]+ <([a-z|-]+)>`)
	docFlagRE     = regexp.MustCompile("`--([a-z][a-z-]*)")
)

func help(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, append(args, "-h")...).CombinedOutput()
	if err != nil {
		t.Fatalf("dirsync %s -h: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestCLIHelpMatchesOperationsDoc runs the real binary's help for every
// subcommand (and every action of commands that have actions) and checks
// docs/operations.md has a section per command listing exactly its flags
// and actions.
func TestCLIHelpMatchesOperationsDoc(t *testing.T) {
	bin := dirsyncBinary(t)
	doc, err := os.ReadFile("operations.md")
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]string{}
	parts := strings.Split(string(doc), "\n### `dirsync ")
	for _, p := range parts[1:] {
		name, body, _ := strings.Cut(p, "`")
		if end := strings.Index(body, "\n## "); end >= 0 {
			body = body[:end]
		}
		sections[name] = body
	}
	top := help(t, bin)
	_, list, _ := strings.Cut(top, "commands:")
	list, _, _ = strings.Cut(list, "\n\n")
	commands := commandLineRE.FindAllStringSubmatch(list, -1)
	if len(commands) < 5 {
		t.Fatalf("dirsync -h lists only %d commands:\n%s", len(commands), top)
	}
	seen := map[string]bool{}
	for _, c := range commands {
		name := c[1]
		seen[name] = true
		body, ok := sections[name]
		if !ok {
			t.Errorf("docs/operations.md has no section \"### `dirsync %s`\"", name)
			continue
		}
		out := help(t, bin, name)
		if m := actionsRE.FindStringSubmatch(out); m != nil {
			for _, action := range strings.Split(m[1], "|") {
				if !strings.Contains(body, "`"+action+"`") {
					t.Errorf("docs/operations.md, dirsync %s: action %s is not documented", name, action)
				}
				out += help(t, bin, name, action)
			}
		}
		flags := map[string]bool{}
		for _, f := range flagLineRE.FindAllStringSubmatch(out, -1) {
			flags[f[1]] = true
		}
		documented := map[string]bool{}
		for _, f := range docFlagRE.FindAllStringSubmatch(body, -1) {
			documented[f[1]] = true
		}
		for f := range flags {
			if !documented[f] {
				t.Errorf("docs/operations.md, dirsync %s: flag --%s is not documented", name, f)
			}
		}
		for f := range documented {
			if !flags[f] {
				t.Errorf("docs/operations.md, dirsync %s: documents --%s, which the command does not have", name, f)
			}
		}
	}
	for name := range sections {
		if !seen[name] {
			t.Errorf("docs/operations.md documents dirsync %s, which the binary does not have", name)
		}
	}
}

var metricNameRE = regexp.MustCompile(`dirsync_[a-z_]+`)

// TestMetricsDoc checks that the metrics and alert rules in
// docs/operations.md name exactly the metrics sync/metrics defines, and
// that the alert rules are a well-formed Prometheus rule file.
func TestMetricsDoc(t *testing.T) {
	src, err := os.ReadFile("../internal/sync/metrics/metrics.go")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("operations.md")
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	for _, m := range regexp.MustCompile(`"(dirsync_[a-z_]+)"`).FindAllStringSubmatch(string(src), -1) {
		defined[m[1]] = true
	}
	if len(defined) < 5 {
		t.Fatalf("found only %d metric names in internal/sync/metrics/metrics.go", len(defined))
	}
	mentioned := map[string]bool{}
	for _, m := range metricNameRE.FindAllString(string(doc), -1) {
		mentioned[m] = true
		if !defined[m] {
			t.Errorf("docs/operations.md mentions %s, which sync/metrics does not define", m)
		}
	}
	for m := range defined {
		if !strings.Contains(string(doc), "| `"+m+"` |") {
			t.Errorf("metric %s has no row in docs/operations.md's metrics table", m)
		}
	}

	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert string            `yaml:"alert"`
				Expr  string            `yaml:"expr"`
				For   string            `yaml:"for"`
				Label map[string]string `yaml:"labels"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	found := false
	for _, m := range yamlBlockRE.FindAllStringSubmatch(string(doc), -1) {
		if !strings.HasPrefix(m[1], "groups:") {
			continue
		}
		found = true
		dec := yaml.NewDecoder(strings.NewReader(m[1]))
		dec.KnownFields(false)
		if err := dec.Decode(&rules); err != nil {
			t.Fatalf("alert rules: %v", err)
		}
	}
	if !found || len(rules.Groups) == 0 {
		t.Fatal("docs/operations.md has no alert rules block starting with groups:")
	}
	names := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || strings.TrimSpace(r.Expr) == "" || r.Label["severity"] == "" {
				t.Errorf("alert rule %+v: want alert, expr and a severity label", r)
			}
			if names[r.Alert] {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			names[r.Alert] = true
			if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") {
				t.Errorf("alert %s: unbalanced parentheses in %q", r.Alert, r.Expr)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("alert %s: for %q: %v", r.Alert, r.For, err)
				}
			}
		}
	}
}

// TestHTTPRoutesDocumented checks every route the whole HTTP API registers
// (httpapi.New with every optional part) appears in docs/operations.md.
func TestHTTPRoutesDocumented(t *testing.T) {
	doc, err := os.ReadFile("operations.md")
	if err != nil {
		t.Fatal(err)
	}
	routes := fullAPI(t).Routes()
	if len(routes) < 5 {
		t.Fatalf("found only %d routes", len(routes))
	}
	for _, r := range routes {
		if !strings.Contains(string(doc), r.Method+" "+r.Path) {
			t.Errorf("route %s %s is not documented in docs/operations.md", r.Method, r.Path)
		}
	}
}

// tableFields returns the first-column backticked names of the table that
// follows heading in doc.
func tableFields(t *testing.T, doc, heading string) []string {
	t.Helper()
	_, rest, ok := strings.Cut(doc, heading)
	if !ok {
		t.Fatalf("no %q in the doc", heading)
	}
	var out []string
	inTable := false
	for _, line := range strings.Split(rest, "\n") {
		switch {
		case strings.HasPrefix(line, "| `"):
			inTable = true
			name, _, _ := strings.Cut(strings.TrimPrefix(line, "| `"), "`")
			out = append(out, name)
		case strings.HasPrefix(line, "|"):
			inTable = true
		case inTable:
			return out
		}
	}
	return out
}

func jsonFields(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			out = append(out, name)
		}
	}
	return out
}

// TestSignInIntegrationDoc checks the documented key layout, status record
// and change stream entry against the code: keys as accesscache builds
// them, status fields as AccountStatus encodes them, and stream fields as
// dirsync's writer really appends them to a real Redis.
func TestSignInIntegrationDoc(t *testing.T) {
	raw, err := os.ReadFile("sign-in-integration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	k := accesscache.NewKeys("P")
	for _, key := range []string{k.User("<email>"), k.Status("<id>"), k.Index("<id>"), k.Changes("<id>"), k.Lease("<id>"), k.Fence("<id>"), k.Replicas()} {
		if !strings.Contains(doc, "`"+key+"`") {
			t.Errorf("key %s is not in docs/sign-in-integration.md", key)
		}
	}
	if !strings.Contains(doc, fmt.Sprintf("schema v%d", accesscache.SchemaVersion)) {
		t.Errorf("the doc does not name schema v%d", accesscache.SchemaVersion)
	}
	if got, want := tableFields(t, doc, "### Status record"), jsonFields(reflect.TypeOf(accesscache.AccountStatus{})); !slices.Equal(got, want) {
		t.Errorf("status record fields documented %q, encoded %q", got, want)
	}

	rs := servertest.StartRedis(t)
	client := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer client.Close()
	d := entitlement.Denied("dave@acme.example", entitlement.ReasonSuspended)
	d.Account = "acme"
	old := mapper.Published{Permission: entitlement.PermissionPro, Allowed: true}
	ch := mapper.Change{Email: d.Email, Old: &old, New: &d, Next: mapper.PublishedOf(&d)}
	if err := store.NewRedis(client, "dirsync").Apply(t.Context(), "acme", []mapper.Change{ch}, time.Now()); err != nil {
		t.Fatal(err)
	}
	entries, err := client.XRange(t.Context(), accesscache.NewKeys("dirsync").Changes("acme"), "-", "+").Result()
	if err != nil || len(entries) != 1 {
		t.Fatalf("change stream: %v, %d entries", err, len(entries))
	}
	var written []string
	for f := range entries[0].Values {
		written = append(written, f)
	}
	documented := tableFields(t, doc, "Each entry's fields")
	slices.Sort(written)
	slices.Sort(documented)
	if !slices.Equal(written, documented) {
		t.Errorf("change stream fields documented %q, written %q", documented, written)
	}
}

var (
	mdLinkRE    = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	mdHeadingRE = regexp.MustCompile(`(?m)^#{1,6} (.+)$`)
	slugDropRE  = regexp.MustCompile(`[^\p{L}\p{N} _-]`)
)

// slug is GitHub's anchor for a heading.
func slug(heading string) string {
	return strings.ReplaceAll(slugDropRE.ReplaceAllString(strings.ToLower(strings.TrimSpace(heading)), ""), " ", "-")
}

// TestDocLinks checks every relative link in docs/*.md and README.md
// points at a file that exists and, with a #fragment, at one of its
// headings.
func TestDocLinks(t *testing.T) {
	files, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../README.md")
	anchors := func(path string) map[string]bool {
		text, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		out := map[string]bool{}
		for _, m := range mdHeadingRE.FindAllStringSubmatch(string(text), -1) {
			out[slug(m[1])] = true
		}
		return out
	}
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mdLinkRE.FindAllStringSubmatch(string(text), -1) {
			link := m[1]
			if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
				continue
			}
			target, frag, _ := strings.Cut(link, "#")
			path := f
			if target != "" {
				path = filepath.Join(filepath.Dir(f), target)
				if _, err := os.Stat(path); err != nil {
					t.Errorf("%s: link %s: %v", f, link, err)
					continue
				}
			}
			if frag != "" && strings.HasSuffix(path, ".md") && !anchors(path)[frag] {
				t.Errorf("%s: link %s: no heading with anchor #%s in %s", f, link, frag, path)
			}
		}
	}
}
