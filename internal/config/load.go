package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Problem is one thing wrong with a config file.
type Problem struct {
	// Path locates the field, e.g. "accounts[0].directory.ldap.bind_dn".
	Path string
	// Line in the file, when known (0 otherwise).
	Line int
	// Message says what is wrong and how to fix it.
	Message string
}

func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("%s (line %d): %s", p.Path, p.Line, p.Message)
	}
	return fmt.Sprintf("%s: %s", p.Path, p.Message)
}

// Error lists every problem found in a config file. Callers that need the
// individual problems use errors.As.
type Error struct {
	File     string
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "config %s: %d problem(s):", e.File, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Load reads, decodes, defaults and validates the config file at path.
// kinds are the directory source kinds of the build: each configures its
// directory types through its section. getenv resolves *_env secret
// references during validation. On any problem it returns an *Error
// listing all of them.
func Load(path string, kinds []SourceKind, getenv func(string) string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, filepath.Dir(abs), path, kinds, getenv)
}

// Parse is Load on bytes already read; dir is where relative paths resolve
// and name is used in error messages.
func Parse(data []byte, dir, name string, kinds []SourceKind, getenv func(string) string) (*Config, error) {
	var cfg Config
	d := decode(data, &cfg, kinds, "")
	if d.fatal {
		return nil, &Error{File: name, Problems: d.problems}
	}
	cfg.dir = dir
	cfg.kinds = kinds
	cfg.applyDefaults()
	if all := append(d.problems, cfg.validate(getenv)...); len(all) > 0 {
		return nil, &Error{File: name, Problems: all}
	}
	return &cfg, nil
}

// decoded is what decode found wrong; fatal means the document could not
// be decoded at all.
type decoded struct {
	problems []Problem
	fatal    bool
}

// decode parses YAML (or JSON, a subset of it) strictly into out, a
// *Config or an *Account: unknown fields and type mismatches come back as
// problems with their paths, under prefix; every account's directory
// sections are decoded with their kinds.
func decode(data []byte, out any, kinds []SourceKind, prefix string) decoded {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return decoded{fatal: true, problems: []Problem{{Path: orFile(prefix), Message: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}}}
	}
	if len(bytes.TrimSpace(data)) == 0 || len(root.Content) == 0 {
		msg := "empty config; see deployments/local/config.yaml for a starting point"
		if _, isAccount := out.(*Account); isAccount {
			msg = "empty account; give at least id, claimed_domains, directory and bindings"
		}
		return decoded{fatal: true, problems: []Problem{{Path: orFile(prefix), Message: msg}}}
	}
	lines := map[int]string{}
	s := schema{directoryFields: sectionFields(kinds)}
	problems := s.checkFields(root.Content[0], reflect.TypeOf(out).Elem(), prefix, lines)

	if err := root.Content[0].Decode(out); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return decoded{fatal: true, problems: append(problems, Problem{Path: orFile(prefix), Message: err.Error()})}
		}
		problems = append(problems, decodeProblems(err, lines)...)
	}
	switch v := out.(type) {
	case *Config:
		for i := range v.Accounts {
			problems = append(problems, decodeSections(&v.Accounts[i].Directory, kinds, lines)...)
		}
	case *Account:
		problems = append(problems, decodeSections(&v.Directory, kinds, lines)...)
	}
	return decoded{problems: problems}
}

func orFile(path string) string {
	if path == "" {
		return "(file)"
	}
	return path
}

// decodeProblems turns a decoder's type errors into problems located by
// lines.
func decodeProblems(err error, lines map[int]string) []Problem {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return []Problem{{Path: "(file)", Message: err.Error()}}
	}
	var problems []Problem
	for _, msg := range te.Errors {
		problems = append(problems, typeProblem(msg, lines))
	}
	return problems
}

var lineRE = regexp.MustCompile(`^line (\d+): (.*)$`)

func typeProblem(msg string, lines map[int]string) Problem {
	m := lineRE.FindStringSubmatch(msg)
	if m == nil {
		return Problem{Path: "(file)", Message: msg}
	}
	line, _ := strconv.Atoi(m[1])
	detail := m[2]
	detail = strings.Replace(detail, "cannot unmarshal", "wrong type: cannot use", 1)
	detail = strings.Replace(detail, "!!str", "text", 1)
	detail = strings.Replace(detail, "!!int", "a number", 1)
	detail = strings.Replace(detail, "!!seq", "a list", 1)
	detail = strings.Replace(detail, "!!map", "a mapping", 1)
	detail = strings.Replace(detail, "time.Duration", "a duration such as 30s", 1)
	path := lines[line]
	if path == "" {
		path = "(file)"
	}
	return Problem{Path: path, Line: line, Message: detail}
}

// schema is what checkFields knows besides the Go types: the sections a
// directory may hold, which belong to the source kinds.
type schema struct {
	directoryFields map[string]reflect.Type
}

// checkFields walks the YAML tree beside the Go type, reporting keys the
// schema does not have, and records the path of every value by line.
func (s schema) checkFields(n *yaml.Node, t reflect.Type, path string, lines map[int]string) []Problem {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if _, ok := lines[n.Line]; !ok && path != "" {
		lines[n.Line] = path
	}
	var problems []Problem
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode && t.String() != "time.Time":
		fields := yamlFields(t)
		if t == reflect.TypeFor[Directory]() {
			fields = s.directoryFields
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			child := joinPath(path, key.Value)
			lines[key.Line] = child
			ft, ok := fields[key.Value]
			if !ok {
				problems = append(problems, Problem{Path: child, Line: key.Line,
					Message: "unknown field" + suggest(key.Value, fields) + "; known fields here: " + strings.Join(sortedKeys(fields), ", ")})
				continue
			}
			problems = append(problems, s.checkFields(val, ft, child, lines)...)
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, item := range n.Content {
			problems = append(problems, s.checkFields(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), lines)...)
		}
	}
	return problems
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func yamlFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		fields[name] = f.Type
	}
	return fields
}

func sortedKeys(m map[string]reflect.Type) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// suggest names a known field close to an unknown one (a typo or a
// camelCase spelling).
func suggest(key string, fields map[string]reflect.Type) string {
	want := strings.ToLower(strings.ReplaceAll(strings.ReplaceAll(key, "-", ""), "_", ""))
	for name := range fields {
		if strings.ReplaceAll(name, "_", "") == want {
			return fmt.Sprintf(" (did you mean %q?)", name)
		}
	}
	best, bestDist := "", 3
	for name := range fields {
		if d := editDistance(key, name); d < bestDist {
			best, bestDist = name, d
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return ""
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
