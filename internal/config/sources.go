package config

import (
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// SourceKind is one kind of polled directory source as the config schema
// sees it: the directory.type values it serves, the section of `directory:`
// that configures it, the section's defaults and its validation. A source
// package builds its kind with NewSourceKind; the daemon's wiring lists
// the kinds of the build and passes the list to Load, Parse and
// ParseAccount, so config imports no source package. Directory type
// console is not a kind: console accounts have no polled source.
type SourceKind struct {
	types       []string
	key         string
	sectionType reflect.Type
	newSection  func() any
	defaults    func(section any, resolve func(string) string)
	validate    func(section any, c *Check)
	// database and safeguardWindow: see Section.
	database        bool
	safeguardWindow time.Duration
}

// Section describes a source kind's config section: S is the section's
// struct, decoded strictly from YAML (unknown fields are problems).
type Section[S any] struct {
	// Types are the directory.type values the kind serves, e.g.
	// active_directory and ldap (both configured by the ldap section).
	Types []string
	// Key is the section's key under directory, e.g. "ldap".
	Key string
	// Defaults fills the fields s leaves unset and resolves its relative
	// file paths with resolve (against the config file's directory). It is
	// applied before Validate, also to a section the account omits.
	Defaults func(s *S, resolve func(path string) string)
	// Validate reports every problem of s to c, each under its field.
	Validate func(s *S, c *Check)
	// Database marks a kind whose directory data dirsync keeps in its own
	// PostgreSQL database (scim): its accounts require
	// console.postgres_dsn.
	Database bool
	// SafeguardWindow is the default safeguard.window of the kind's
	// accounts (0: each pass judged alone).
	SafeguardWindow time.Duration
}

// NewSourceKind returns the kind described by s.
func NewSourceKind[S any](s Section[S]) SourceKind {
	return SourceKind{
		types:       append([]string(nil), s.Types...),
		key:         s.Key,
		sectionType: reflect.TypeFor[S](),
		newSection:  func() any { return new(S) },
		defaults: func(section any, resolve func(string) string) {
			if s.Defaults != nil {
				s.Defaults(section.(*S), resolve)
			}
		},
		validate: func(section any, c *Check) {
			if s.Validate != nil {
				s.Validate(section.(*S), c)
			}
		},
		database:        s.Database,
		safeguardWindow: s.SafeguardWindow,
	}
}

// Types are the directory.type values the kind serves.
func (k SourceKind) Types() []string { return append([]string(nil), k.types...) }

// Key is the kind's section key under directory.
func (k SourceKind) Key() string { return k.key }

// SectionType is the Go type of the kind's section (for documentation
// checks that walk the schema).
func (k SourceKind) SectionType() reflect.Type { return k.sectionType }

// SectionOf returns the decoded, defaulted section of d's directory type,
// as the section type S of that type's kind. ok is false when d has no
// such section: type console, or d was not built by Parse (or
// ParseAccount) with the kind.
func SectionOf[S any](d Directory) (s *S, ok bool) {
	s, ok = d.section.(*S)
	return s, ok
}

// NewDirectory returns a directory of type typ configured by section (a
// pointer to its kind's section type), as Parse would build it: for
// callers that construct accounts in code, such as tests.
func NewDirectory(typ string, section any) Directory {
	return Directory{Type: typ, section: section}
}

// UnmarshalYAML keeps the type and, until decodeSections decodes each with
// its kind, the raw node of every other key: config does not know the
// section types.
func (d *Directory) UnmarshalYAML(n *yaml.Node) error {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		value := ""
		if n.Kind == yaml.ScalarNode {
			value = " `" + n.Value + "`"
		}
		// As the decoder words its own type errors, so typeProblem reads it.
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: cannot unmarshal %s%s into config.Directory", n.Line, n.ShortTag(), value)}}
	}
	d.raw = map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		if key.Value == "type" {
			if err := val.Decode(&d.Type); err != nil {
				return err
			}
			continue
		}
		d.raw[key.Value] = val
	}
	return nil
}

// kindFor returns the kind serving directory type typ.
func kindFor(kinds []SourceKind, typ string) (SourceKind, bool) {
	for _, k := range kinds {
		for _, t := range k.types {
			if t == typ {
				return k, true
			}
		}
	}
	return SourceKind{}, false
}

// directoryTypes lists every directory.type value, for messages.
func directoryTypes(kinds []SourceKind) []string {
	var out []string
	for _, k := range kinds {
		out = append(out, k.types...)
	}
	return append(out, DirectoryConsole)
}

// sectionFields are the keys a directory mapping may hold, with their Go
// types, for the unknown-field check.
func sectionFields(kinds []SourceKind) map[string]reflect.Type {
	fields := map[string]reflect.Type{"type": reflect.TypeFor[string]()}
	for _, k := range kinds {
		fields[k.key] = k.sectionType
	}
	return fields
}

// decodeSections decodes every section of d that a kind knows (unknown
// keys were reported by checkFields), strictly, reporting type mismatches
// by line. The section of d's own type is kept, created empty when the
// file omits it; a section that belongs to another type is checked the
// same way and then dropped, as the file's other unused fields are.
func decodeSections(d *Directory, kinds []SourceKind, lines map[int]string) []Problem {
	var problems []Problem
	own, hasOwn := kindFor(kinds, d.Type)
	for _, k := range kinds {
		n, present := d.raw[k.key]
		if !present && !(hasOwn && k.key == own.key) {
			continue
		}
		section := k.newSection()
		if present {
			if err := n.Decode(section); err != nil {
				problems = append(problems, decodeProblems(err, lines)...)
			}
		}
		if hasOwn && k.key == own.key {
			d.section = section
		}
	}
	d.raw = nil
	return problems
}

// Check collects the problems of one config section, each under the
// section's path (e.g. "accounts[2].directory.ldap"), into the collector
// of the whole document, so that every problem of a file is reported at
// once. It also resolves *_env secrets.
type Check struct {
	path   string
	ps     *problems
	getenv func(string) string
}

// Path is the full path of field, e.g. "accounts[2].directory.ldap.urls[0]"
// for "urls[0]".
func (c *Check) Path(field string) string { return joinPath(c.path, field) }

// Add reports a problem with field; the message says what is wrong and
// how to fix it, and never holds a secret's value.
func (c *Check) Add(field, format string, args ...any) {
	c.ps.add(c.Path(field), format, args...)
}

// Secret checks the secret held by the fields <name>_file and <name>_env:
// at most one is set, the file is readable and the file or variable is
// not empty or white space (an empty secret is never "no secret");
// required says one of them must be set.
func (c *Check) Secret(name, file, env string, required bool) {
	checkSecret(c.ps, c.Path(name), file, env, required, c.getenv)
}

// File checks that the file field names exists; an empty name is not
// checked.
func (c *Check) File(field, file string) {
	checkFile(c.ps, c.Path(field), file)
}

// sectionPath is the path of a directory's section, e.g.
// "accounts[2].directory.ldap".
func sectionPath(directoryPath string, k SourceKind) string {
	return joinPath(directoryPath, k.key)
}

// validateDirectory checks d's type and, through its kind, its section.
func validateDirectory(ps *problems, p string, d *Directory, kinds []SourceKind, getenv func(string) string) {
	types := directoryTypes(kinds)
	list := strings.Join(types[:len(types)-1], ", ") + " or " + types[len(types)-1]
	if d.Type == DirectoryConsole {
		return // users and permissions live in PostgreSQL (top-level console)
	}
	k, ok := kindFor(kinds, d.Type)
	switch {
	case d.Type == "":
		ps.add(joinPath(p, "type"), "required: %s", list)
		return
	case !ok:
		ps.add(joinPath(p, "type"), "%q is not a directory type; use %s", d.Type, list)
		return
	case d.section == nil:
		// Parse and ParseAccount always set it; a bug otherwise.
		ps.add(joinPath(p, k.key), "not decoded (internal error)")
		return
	}
	k.validate(d.section, &Check{path: sectionPath(p, k), ps: ps, getenv: getenv})
}

// applyDirectoryDefaults applies the defaults of d's kind to its section.
func applyDirectoryDefaults(d *Directory, kinds []SourceKind, resolve func(string) string) {
	if k, ok := kindFor(kinds, d.Type); ok && d.section != nil {
		k.defaults(d.section, resolve)
	}
}

func checkFile(ps *problems, path, file string) {
	if file == "" {
		return
	}
	if _, err := os.Stat(file); err != nil {
		ps.add(path, "cannot read %s: %v", file, unwrapPathError(err))
	}
}
