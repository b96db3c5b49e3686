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
// getenv resolves *_env secret references during validation. On any problem
// it returns an *Error listing all of them.
func Load(path string, getenv func(string) string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, filepath.Dir(abs), path, getenv)
}

// Parse is Load on bytes already read; dir is where relative paths resolve
// and name is used in error messages.
func Parse(data []byte, dir, name string, getenv func(string) string) (*Config, error) {
	cfg, problems := decode(data)
	if cfg == nil {
		return nil, &Error{File: name, Problems: problems}
	}
	cfg.dir = dir
	cfg.applyDefaults()
	problems = append(problems, cfg.validate(getenv)...)
	if len(problems) > 0 {
		return nil, &Error{File: name, Problems: problems}
	}
	return cfg, nil
}

// decode parses YAML strictly. Unknown fields and type mismatches come back
// as problems with their paths; the returned config is nil only when the
// document cannot be parsed at all.
func decode(data []byte) (*Config, []Problem) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, []Problem{{Path: "(file)", Message: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	if len(bytes.TrimSpace(data)) == 0 || len(root.Content) == 0 {
		return nil, []Problem{{Path: "(file)", Message: "empty config; see deployments/local/config.yaml for a starting point"}}
	}
	lines := map[int]string{}
	problems := checkFields(root.Content[0], reflect.TypeOf(Config{}), "", lines)

	var cfg Config
	if err := root.Content[0].Decode(&cfg); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, append(problems, Problem{Path: "(file)", Message: err.Error()})
		}
		for _, msg := range te.Errors {
			problems = append(problems, typeProblem(msg, lines))
		}
	}
	return &cfg, problems
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

// checkFields walks the YAML tree beside the Go type, reporting keys the
// schema does not have, and records the path of every value by line.
func checkFields(n *yaml.Node, t reflect.Type, path string, lines map[int]string) []Problem {
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
			problems = append(problems, checkFields(val, ft, child, lines)...)
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, item := range n.Content {
			problems = append(problems, checkFields(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), lines)...)
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
