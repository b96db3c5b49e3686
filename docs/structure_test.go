package docs_test

import (
	"bufio"
	"encoding/json"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/dirsync/dirsync"

// goPackage is what these tests read of `go list -json`.
type goPackage struct {
	ImportPath   string
	Dir          string
	Name         string
	Imports      []string
	TestImports  []string
	XTestImports []string
	GoFiles      []string
	TestGoFiles  []string
	XTestGoFiles []string
}

func listPackages(t *testing.T) []goPackage {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"/...")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []goPackage
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p goPackage
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 20 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	return pkgs
}

// TestPackageDocs: every package, test-only ones included, says what it
// is for in a package doc comment.
func TestPackageDocs(t *testing.T) {
	for _, p := range listPackages(t) {
		files := slices.Concat(p.GoFiles, p.TestGoFiles, p.XTestGoFiles)
		documented := false
		for _, f := range files {
			fset := token.NewFileSet()
			af, err := parser.ParseFile(fset, filepath.Join(p.Dir, f), nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			if af.Doc != nil && strings.TrimSpace(af.Doc.Text()) != "" {
				documented = true
				break
			}
		}
		if !documented {
			t.Errorf("package %s has no package doc comment", p.ImportPath)
		}
	}
}

// TestImportBoundaries keeps test harnesses out of the product (the
// binaries, the sign-in client and internal/; tools under deployments/ may
// use them) and each vendor SDK behind the packages that adapt it.
func TestImportBoundaries(t *testing.T) {
	onlyIn := map[string][]string{
		// vendor → the packages allowed to import it in non-test code
		"github.com/okta/okta-sdk-golang/": {module + "/internal/directory/okta", module + "/internal/testsupport/oktafake"},
		"github.com/go-ldap/ldap/":         {module + "/internal/directory/ldapdir", module + "/internal/directory/ldapentry", module + "/internal/directory/ldapwire", module + "/internal/directory/ldif"},
		// PostgreSQL: only the packages that own tables (and main).
		"github.com/jackc/pgx/": {module + "/internal/pgstore", module + "/internal/entitlement/console", module + "/internal/entitlement/historydb",
			module + "/internal/sync/registry", module + "/internal/directory/scim", module + "/cmd/dirsync"},
	}
	for _, p := range listPackages(t) {
		product := (strings.HasPrefix(p.ImportPath, module+"/cmd/") || strings.HasPrefix(p.ImportPath, module+"/entitlement") ||
			strings.HasPrefix(p.ImportPath, module+"/internal/")) && !strings.HasPrefix(p.ImportPath, module+"/internal/testsupport/")
		if !product {
			continue
		}
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, module+"/internal/testsupport/") {
				t.Errorf("%s imports the test harness %s outside its tests", p.ImportPath, imp)
			}
			for vendor, allowed := range onlyIn {
				if strings.HasPrefix(imp, vendor) && !slices.Contains(allowed, p.ImportPath) {
					t.Errorf("%s imports %s; only %v may", p.ImportPath, imp, allowed)
				}
			}
		}
	}
}

// TestREADMELayout: the README's layout block names every package folder
// (and folder of tests) under cmd/, entitlement/ and internal/, and every
// folder it names exists.
func TestREADMELayout(t *testing.T) {
	listed := readmeLayout(t)
	for _, p := range listPackages(t) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		if !strings.HasPrefix(rel, "cmd/") && !strings.HasPrefix(rel, "entitlement") && !strings.HasPrefix(rel, "internal/") {
			continue
		}
		if !listed[rel] {
			t.Errorf("README layout does not list %s/", rel)
		}
	}
	for dir := range listed {
		if fi, err := os.Stat(filepath.Join("..", dir)); err != nil || !fi.IsDir() {
			t.Errorf("README layout lists %s/, which is not a folder", dir)
		}
	}
}

// readmeLayout parses the README's layout block: one folder (or several,
// comma-separated) per line, nested by two-space indentation.
func readmeLayout(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	start := strings.Index(s, "## Layout")
	if start < 0 {
		t.Fatal("README has no ## Layout section")
	}
	s = s[start:]
	open := strings.Index(s, "```\n")
	end := strings.Index(s[open+4:], "```")
	if open < 0 || end < 0 {
		t.Fatal("README layout has no code block")
	}
	listed := map[string]bool{}
	var stack []string // stack[i] is the folder at indentation level i
	sc := bufio.NewScanner(strings.NewReader(s[open+4 : open+4+end]))
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimLeft(line, " ")
		level := (len(line) - len(trimmed)) / 2
		// The folder names come before the description: tokens ending in
		// "/" or "/," up to the first word that is not a folder.
		var names []string
		for _, tok := range strings.Fields(trimmed) {
			tok = strings.TrimSuffix(tok, ",")
			if !strings.HasSuffix(tok, "/") {
				break
			}
			names = append(names, strings.TrimSuffix(tok, "/"))
		}
		if len(names) == 0 || level > len(stack) {
			continue
		}
		stack = stack[:level]
		for _, n := range names {
			full := filepath.ToSlash(filepath.Join(append(slices.Clone(stack), n)...))
			listed[full] = true
		}
		stack = append(stack, filepath.Join(names[0])) // a nested line belongs to the first
	}
	if len(listed) < 10 {
		t.Fatalf("README layout lists only %v", listed)
	}
	return listed
}

// TestSecurityTableNamesRealTests: every test docs/security.md cites as
// proof exists, so the table cannot outlive a renamed or deleted test.
func TestSecurityTableNamesRealTests(t *testing.T) {
	b, err := os.ReadFile("security.md")
	if err != nil {
		t.Fatal(err)
	}
	cited := regexp.MustCompile("`((?:Test|Fuzz)[A-Za-z0-9_]+)").FindAllStringSubmatch(string(b), -1)
	if len(cited) < 20 {
		t.Fatalf("security.md cites only %d tests", len(cited))
	}
	var sources strings.Builder
	err = filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == ".bench" || d.Name() == ".cache") {
			return filepath.SkipDir
		}
		if strings.HasSuffix(path, "_test.go") {
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			sources.Write(src)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	all := sources.String()
	for _, m := range cited {
		if !strings.Contains(all, "func "+m[1]+"(") {
			t.Errorf("security.md cites %s, which is no test", m[1])
		}
	}
}
