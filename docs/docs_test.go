// Package docs_test keeps the operator documentation in docs/ true to the
// code: every config field is documented (and nothing else), and every
// subcommand and flag of the real binary appears in the docs.
package docs_test

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dirsync/dirsync/config"
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

// TestConfigurationDocMatchesSchema fails when a config field exists in
// config.Config but not in docs/configuration.md's reference tables, or
// the other way round.
func TestConfigurationDocMatchesSchema(t *testing.T) {
	doc, err := os.ReadFile("configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]int{}
	for _, m := range docTableRE.FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]]++
	}
	code := configPaths(reflect.TypeOf(config.Config{}), "")
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
			if _, err := config.Parse([]byte(block), dir, fmt.Sprintf("%s example %d", doc, n), func(string) string { return "" }); err != nil {
				t.Errorf("%s example %d is not a valid config:\n%v\n%s", doc, n, err, block)
			}
		}
		if doc == "configuration.md" && n < 3 {
			t.Errorf("%s: found %d complete examples, want AD, OpenLDAP and Okta", doc, n)
		}
	}
}
