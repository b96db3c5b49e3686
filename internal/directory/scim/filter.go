package scim

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Filters (RFC 7644 §3.4.2.2) are parsed here into a tree and evaluated in
// Go against each candidate resource; the store only narrows the
// candidates with indexed equality (userName, externalId, id, displayName)
// and never puts filter text into SQL. Limits keep a hostile filter cheap:
// at most maxFilterLen bytes, maxFilterDepth nested levels and
// maxFilterTerms comparisons; parsing is linear in the filter's length.
const (
	maxFilterLen   = 8 << 10
	maxFilterDepth = 32
	maxFilterTerms = 256
)

// expr is a node of a parsed filter.
type expr interface{}

type logicalExpr struct {
	and         bool
	left, right expr
}

type notExpr struct{ x expr }

// compareExpr is "attrPath op value" or "attrPath pr".
type compareExpr struct {
	path  attrPath
	op    string // eq ne co sw ew gt ge lt le pr
	value any    // string, bool, nil or json.Number
}

// valuePathExpr is "attrPath[filter]": a multi-valued attribute with an
// element matching filter (whose paths name sub-attributes).
type valuePathExpr struct {
	path   attrPath
	filter expr
}

// attrPath is [URI ":"] name ["." sub], as written.
type attrPath struct {
	uri, name, sub string
}

func (p attrPath) String() string {
	s := p.name
	if p.uri != "" {
		s = p.uri + ":" + s
	}
	if p.sub != "" {
		s += "." + p.sub
	}
	return s
}

// parseAttrPath splits a path word; URN-prefixed paths take everything up
// to the last ':' as the URI.
func parseAttrPath(w string) (attrPath, bool) {
	var p attrPath
	if strings.HasPrefix(strings.ToLower(w), "urn:") {
		i := strings.LastIndexByte(w, ':')
		p.uri, w = w[:i], w[i+1:]
	}
	name, sub, hasSub := strings.Cut(w, ".")
	p.name, p.sub = name, sub
	if !validName(p.name) || (hasSub && !validName(p.sub)) {
		return p, false
	}
	return p, true
}

// validName is ATTRNAME = ALPHA *(nameChar), nameChar = "-" / "_" / DIGIT
// / ALPHA, plus "$ref".
func validName(s string) bool {
	if s == "$ref" {
		return true
	}
	if s == "" || !isAlpha(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlpha(c) && !(c >= '0' && c <= '9') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// token kinds of the filter lexer.
type tokKind int

const (
	tokEOF tokKind = iota
	tokWord
	tokString
	tokNumber
	tokLParen
	tokRParen
	tokLBracket
	tokRBracket
)

type token struct {
	kind tokKind
	text string // word text, unescaped string, number text
	pos  int
}

type filterParser struct {
	src   string
	pos   int
	tok   token
	depth int
	terms int
}

func invalidFilter(format string, args ...any) *Error {
	return badRequest(TypeInvalidFilter, format, args...)
}

// parseFilter parses a filter expression.
func parseFilter(src string) (expr, *Error) {
	if len(src) > maxFilterLen {
		return nil, invalidFilter("the filter is %d bytes; at most %d are accepted", len(src), maxFilterLen)
	}
	if !utf8.ValidString(src) {
		return nil, invalidFilter("the filter is not valid UTF-8")
	}
	p := &filterParser{src: src}
	if e := p.next(); e != nil {
		return nil, e
	}
	x, e := p.or()
	if e != nil {
		return nil, e
	}
	if p.tok.kind != tokEOF {
		return nil, invalidFilter("unexpected %s at offset %d of the filter", p.describe(), p.tok.pos)
	}
	return x, nil
}

func (p *filterParser) describe() string {
	switch p.tok.kind {
	case tokEOF:
		return "end of filter"
	case tokString:
		return strconv.Quote(p.tok.text)
	}
	return strconv.Quote(p.tok.text)
}

// next reads the next token.
func (p *filterParser) next() *Error {
	for p.pos < len(p.src) && (p.src[p.pos] == ' ' || p.src[p.pos] == '\t' || p.src[p.pos] == '\n' || p.src[p.pos] == '\r') {
		p.pos++
	}
	start := p.pos
	if p.pos >= len(p.src) {
		p.tok = token{kind: tokEOF, pos: start}
		return nil
	}
	c := p.src[p.pos]
	switch c {
	case '(':
		p.pos++
		p.tok = token{kind: tokLParen, text: "(", pos: start}
	case ')':
		p.pos++
		p.tok = token{kind: tokRParen, text: ")", pos: start}
	case '[':
		p.pos++
		p.tok = token{kind: tokLBracket, text: "[", pos: start}
	case ']':
		p.pos++
		p.tok = token{kind: tokRBracket, text: "]", pos: start}
	case '"':
		end := p.pos + 1
		for end < len(p.src) && p.src[end] != '"' {
			if p.src[end] == '\\' {
				end++
			}
			end++
		}
		if end >= len(p.src) {
			return invalidFilter("unterminated string at offset %d of the filter", start)
		}
		var s string
		if err := json.Unmarshal([]byte(p.src[start:end+1]), &s); err != nil {
			return invalidFilter("bad string at offset %d of the filter: %v", start, err)
		}
		p.pos = end + 1
		p.tok = token{kind: tokString, text: s, pos: start}
	default:
		end := p.pos
		for end < len(p.src) && !strings.ContainsRune(" \t\r\n()[]\"", rune(p.src[end])) {
			end++
		}
		w := p.src[start:end]
		p.pos = end
		if c == '-' || (c >= '0' && c <= '9') {
			p.tok = token{kind: tokNumber, text: w, pos: start}
		} else {
			p.tok = token{kind: tokWord, text: w, pos: start}
		}
	}
	return nil
}

func (p *filterParser) keyword(k string) bool {
	return p.tok.kind == tokWord && strings.EqualFold(p.tok.text, k)
}

func (p *filterParser) enter() *Error {
	p.depth++
	if p.depth > maxFilterDepth {
		return invalidFilter("the filter nests deeper than %d levels", maxFilterDepth)
	}
	return nil
}

func (p *filterParser) or() (expr, *Error) {
	if e := p.enter(); e != nil {
		return nil, e
	}
	defer func() { p.depth-- }()
	left, e := p.and()
	if e != nil {
		return nil, e
	}
	for p.keyword("or") {
		if e := p.next(); e != nil {
			return nil, e
		}
		right, e := p.and()
		if e != nil {
			return nil, e
		}
		left = &logicalExpr{and: false, left: left, right: right}
	}
	return left, nil
}

func (p *filterParser) and() (expr, *Error) {
	left, e := p.unary()
	if e != nil {
		return nil, e
	}
	for p.keyword("and") {
		if e := p.next(); e != nil {
			return nil, e
		}
		right, e := p.unary()
		if e != nil {
			return nil, e
		}
		left = &logicalExpr{and: true, left: left, right: right}
	}
	return left, nil
}

func (p *filterParser) unary() (expr, *Error) {
	switch {
	case p.keyword("not"):
		if e := p.next(); e != nil {
			return nil, e
		}
		if p.tok.kind != tokLParen {
			return nil, invalidFilter("not must be followed by a parenthesised filter, at offset %d", p.tok.pos)
		}
		x, e := p.group()
		if e != nil {
			return nil, e
		}
		return &notExpr{x: x}, nil
	case p.tok.kind == tokLParen:
		return p.group()
	case p.tok.kind == tokWord:
		return p.attrExpr()
	}
	return nil, invalidFilter("expected an attribute, ( or not at offset %d of the filter, found %s", p.tok.pos, p.describe())
}

// group parses "(" filter ")".
func (p *filterParser) group() (expr, *Error) {
	if e := p.next(); e != nil {
		return nil, e
	}
	x, e := p.or()
	if e != nil {
		return nil, e
	}
	if p.tok.kind != tokRParen {
		return nil, invalidFilter("missing ) at offset %d of the filter", p.tok.pos)
	}
	return x, p.next()
}

func (p *filterParser) attrExpr() (expr, *Error) {
	path, ok := parseAttrPath(p.tok.text)
	if !ok {
		return nil, invalidFilter("%q is not an attribute path", p.tok.text)
	}
	if e := p.next(); e != nil {
		return nil, e
	}
	if p.tok.kind == tokLBracket {
		if path.sub != "" {
			return nil, invalidFilter("%s[…]: a value filter applies to a multi-valued attribute, not a sub-attribute", path)
		}
		if e := p.next(); e != nil {
			return nil, e
		}
		inner, e := p.or()
		if e != nil {
			return nil, e
		}
		if p.tok.kind != tokRBracket {
			return nil, invalidFilter("missing ] at offset %d of the filter", p.tok.pos)
		}
		return &valuePathExpr{path: path, filter: inner}, p.next()
	}
	if p.tok.kind != tokWord {
		return nil, invalidFilter("expected an operator after %s at offset %d", path, p.tok.pos)
	}
	op := strings.ToLower(p.tok.text)
	p.terms++
	if p.terms > maxFilterTerms {
		return nil, invalidFilter("the filter has more than %d comparisons", maxFilterTerms)
	}
	switch op {
	case "pr":
		return &compareExpr{path: path, op: op}, p.next()
	case "eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le":
	default:
		return nil, invalidFilter("%q is not a filter operator: use eq, ne, co, sw, ew, gt, ge, lt, le or pr", p.tok.text)
	}
	if e := p.next(); e != nil {
		return nil, e
	}
	c := &compareExpr{path: path, op: op}
	switch {
	case p.tok.kind == tokString:
		c.value = p.tok.text
	case p.tok.kind == tokNumber:
		if _, err := strconv.ParseFloat(p.tok.text, 64); err != nil {
			return nil, invalidFilter("%q is not a number", p.tok.text)
		}
		c.value = json.Number(p.tok.text)
	case p.keyword("true"):
		c.value = true
	case p.keyword("false"):
		c.value = false
	case p.keyword("null"):
		c.value = nil
	default:
		return nil, invalidFilter("expected a value (a \"string\", number, true, false or null) after %s %s at offset %d", path, op, p.tok.pos)
	}
	return c, p.next()
}

// Filter is a parsed filter checked against a resource type's schemas.
type Filter struct {
	rt   *resourceType
	root expr
}

// ParseFilter parses and checks a filter for kind (User or Group).
func ParseFilter(kind, src string) (*Filter, error) {
	rt := typeOf(kind)
	x, e := parseFilter(src)
	if e != nil {
		return nil, e
	}
	f := &Filter{rt: rt, root: x}
	if e := f.check(x, nil); e != nil {
		return nil, e
	}
	return f, nil
}

func typeOf(kind string) *resourceType {
	if kind == groupType.Name {
		return groupType
	}
	return userType
}

// lookup finds the attribute a path names: in parent's sub-attributes
// inside a value filter, else at the top level of rt.
func lookup(rt *resourceType, parent *attribute, p attrPath) (top, sub *attribute, ext *schema, e *Error) {
	if parent != nil {
		if p.uri != "" || p.sub != "" {
			return nil, nil, nil, invalidFilter("%s: inside %s[…] name a sub-attribute of %s", p, parent.Name, parent.Name)
		}
		s := parent.sub(p.name)
		if s == nil {
			return nil, nil, nil, invalidFilter("%s has no sub-attribute %q", parent.Name, p.name)
		}
		return s, nil, nil, nil
	}
	switch {
	case p.uri == "":
	case strings.EqualFold(p.uri, rt.Core.ID):
	default:
		ext = rt.extension(p.uri)
		if ext == nil {
			return nil, nil, nil, invalidFilter("%q is not a schema of %s", p.uri, rt.Name)
		}
	}
	if ext != nil {
		top = ext.attr(p.name)
	} else if top = commonAttr(p.name); top == nil {
		top = rt.Core.attr(p.name)
	}
	if top == nil {
		return nil, nil, nil, invalidFilter("%q is not an attribute of %s", p.String(), rt.Name)
	}
	if p.sub != "" {
		if sub = top.sub(p.sub); sub == nil {
			return nil, nil, nil, invalidFilter("%s has no sub-attribute %q", top.Name, p.sub)
		}
	}
	return top, sub, ext, nil
}

// check resolves every path of x (inside a value filter of parent).
func (f *Filter) check(x expr, parent *attribute) *Error {
	switch n := x.(type) {
	case *logicalExpr:
		if e := f.check(n.left, parent); e != nil {
			return e
		}
		return f.check(n.right, parent)
	case *notExpr:
		return f.check(n.x, parent)
	case *valuePathExpr:
		if parent != nil {
			return invalidFilter("value filters do not nest")
		}
		top, _, _, e := lookup(f.rt, nil, n.path)
		if e != nil {
			return e
		}
		if top.Type != tComplex || !top.Multi {
			return invalidFilter("%s[…]: %s is not a multi-valued complex attribute", n.path, top.Name)
		}
		return f.check(n.filter, top)
	case *compareExpr:
		top, sub, _, e := lookup(f.rt, parent, n.path)
		if e != nil {
			return e
		}
		a := top
		if sub != nil {
			a = sub
		} else if top.Type == tComplex && top.sub("value") != nil {
			a = top.sub("value")
		}
		if a.Type == tComplex {
			return invalidFilter("%s is complex: compare one of its sub-attributes", n.path)
		}
		if a.Type == tBoolean && n.op != "eq" && n.op != "ne" && n.op != "pr" {
			return invalidFilter("%s is a boolean: only eq, ne and pr apply", n.path)
		}
		if a.Returned == retNever {
			return invalidFilter("%s cannot be filtered on", n.path)
		}
	}
	return nil
}

// Match reports whether the resource r matches the filter.
func (f *Filter) Match(r *Resource) bool {
	return f.eval(f.root, r.view(), nil)
}

// view is a resource as filters see it: its doc plus id and meta.
func (r *Resource) view() map[string]any {
	v := make(map[string]any, len(r.Doc)+3)
	for k, x := range r.Doc {
		v[k] = x
	}
	v["id"] = r.ID
	v["meta"] = map[string]any{"resourceType": r.Kind, "created": r.Created, "lastModified": r.Modified, "version": r.ETag()}
	if r.Kind == groupType.Name {
		members := make([]any, 0, len(r.Members))
		for _, m := range r.Members {
			members = append(members, map[string]any{"value": m.ID, "type": m.Type})
		}
		v["members"] = members
	}
	return v
}

// eval evaluates x against obj, a resource view or (inside a value filter
// of parent) one element of a multi-valued attribute.
func (f *Filter) eval(x expr, obj map[string]any, parent *attribute) bool {
	switch n := x.(type) {
	case *logicalExpr:
		if n.and {
			return f.eval(n.left, obj, parent) && f.eval(n.right, obj, parent)
		}
		return f.eval(n.left, obj, parent) || f.eval(n.right, obj, parent)
	case *notExpr:
		return !f.eval(n.x, obj, parent)
	case *valuePathExpr:
		top, _, ext, _ := lookup(f.rt, nil, n.path)
		for _, el := range values(container(obj, ext)[top.Name]) {
			if m, ok := el.(map[string]any); ok && f.eval(n.filter, m, top) {
				return true
			}
		}
		return false
	case *compareExpr:
		top, sub, ext, _ := lookup(f.rt, parent, n.path)
		var vals []any
		a := top
		switch {
		case sub != nil:
			a = sub
			for _, el := range values(container(obj, ext)[top.Name]) {
				if m, ok := el.(map[string]any); ok {
					vals = append(vals, values(m[sub.Name])...)
				}
			}
		case top.Type == tComplex && top.sub("value") != nil:
			a = top.sub("value")
			for _, el := range values(container(obj, ext)[top.Name]) {
				if m, ok := el.(map[string]any); ok {
					vals = append(vals, values(m["value"])...)
				}
			}
		default:
			vals = values(container(obj, ext)[top.Name])
		}
		return compare(a, n.op, n.value, vals)
	}
	return false
}

// container is where a path's top-level attribute lives: obj, or the
// extension's object inside it.
func container(obj map[string]any, ext *schema) map[string]any {
	if ext == nil {
		return obj
	}
	m, _ := obj[ext.ID].(map[string]any)
	return m
}

func values(v any) []any {
	switch x := v.(type) {
	case nil:
		return nil
	case []any:
		return x
	}
	return []any{v}
}

// compare applies op to the values of attribute a: a multi-valued
// attribute matches when any value does (RFC 7644 §3.4.2.2), ne when none
// is equal.
func compare(a *attribute, op string, want any, vals []any) bool {
	switch op {
	case "pr":
		for _, v := range vals {
			if s, ok := v.(string); !ok || s != "" {
				return true
			}
		}
		return false
	case "ne":
		return !compare(a, "eq", want, vals)
	}
	if want == nil {
		return op == "eq" && len(vals) == 0
	}
	for _, v := range vals {
		if compareOne(a, op, want, v) {
			return true
		}
	}
	return false
}

func compareOne(a *attribute, op string, want, got any) bool {
	if a.Type == tBoolean {
		w, ok1 := parseBool(want)
		g, ok2 := parseBool(got)
		return ok1 && ok2 && op == "eq" && w == g
	}
	if t, ok := got.(time.Time); ok {
		ws, _ := want.(string)
		w, err := time.Parse(time.RFC3339Nano, ws)
		if err != nil {
			return false
		}
		switch op {
		case "eq":
			return t.Equal(w)
		case "gt":
			return t.After(w)
		case "ge":
			return !t.Before(w)
		case "lt":
			return t.Before(w)
		case "le":
			return !t.After(w)
		}
		return false
	}
	g, ok := got.(string)
	if !ok {
		return false
	}
	var w string
	switch x := want.(type) {
	case string:
		w = x
	case json.Number:
		w = x.String()
	default:
		w = fmt.Sprint(x)
	}
	if !a.CaseExact {
		g, w = foldASCII(g), foldASCII(w)
	}
	switch op {
	case "eq":
		return g == w
	case "co":
		return strings.Contains(g, w)
	case "sw":
		return strings.HasPrefix(g, w)
	case "ew":
		return strings.HasSuffix(g, w)
	case "gt":
		return g > w
	case "ge":
		return g >= w
	case "lt":
		return g < w
	case "le":
		return g <= w
	}
	return false
}

// indexTerm is an equality the store can look up by index.
type indexTerm struct {
	column string // user_name_key, external_id, id, display_name_key
	value  string
}

// hints returns equality terms such that every matching resource matches
// at least one of them, or false when the filter needs a scan.
func (f *Filter) hints() ([]indexTerm, bool) { return f.hintsOf(f.root) }

func (f *Filter) hintsOf(x expr) ([]indexTerm, bool) {
	switch n := x.(type) {
	case *logicalExpr:
		l, lok := f.hintsOf(n.left)
		r, rok := f.hintsOf(n.right)
		switch {
		case n.and && lok && (!rok || len(l) <= len(r)):
			return l, true
		case n.and && rok:
			return r, true
		case !n.and && lok && rok:
			return append(l, r...), true
		}
	case *compareExpr:
		s, isStr := n.value.(string)
		if n.op != "eq" || !isStr || n.path.sub != "" || (n.path.uri != "" && !strings.EqualFold(n.path.uri, f.rt.Core.ID)) {
			return nil, false
		}
		switch {
		case strings.EqualFold(n.path.name, "id"):
			return []indexTerm{{"id", s}}, true
		case strings.EqualFold(n.path.name, "externalId"):
			return []indexTerm{{"external_id", s}}, true
		case f.rt == userType && strings.EqualFold(n.path.name, "userName"):
			return []indexTerm{{"user_name_key", foldASCII(s)}}, true
		case f.rt == groupType && strings.EqualFold(n.path.name, "displayName"):
			return []indexTerm{{"display_name_key", foldASCII(s)}}, true
		}
	}
	return nil, false
}
