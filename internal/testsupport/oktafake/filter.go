package oktafake

import (
	"fmt"
	"strings"
	"time"
)

// This file implements the subset of Okta's SCIM-style filter and search
// expression language that the fake serves: comparisons of an attribute with
// a quoted string ("status eq \"ACTIVE\""), joined by and/or and grouped by
// parentheses. Property names are case-sensitive and operators are not, as
// in Okta. Anything outside the subset is a 400 error, as Okta answers an
// invalid filter.

// attrKind says how an attribute's values compare.
type attrKind int

const (
	kindString attrKind = iota
	kindTime
)

// grammar lists, per attribute, its kind and the operators it accepts.
type grammar map[string]attrRule

type attrRule struct {
	kind attrKind
	ops  []string
}

var (
	eqOnly     = []string{"eq"}
	dateOps    = []string{"eq", "gt", "ge", "lt", "le"}
	searchOps  = []string{"eq", "sw", "co"}
	searchDate = []string{"eq", "gt", "ge", "lt", "le"}
)

// userFilter is the documented filter subset for GET /api/v1/users.
var userFilter = grammar{
	"status":            {kindString, eqOnly},
	"id":                {kindString, eqOnly},
	"lastUpdated":       {kindTime, dateOps},
	"profile.login":     {kindString, eqOnly},
	"profile.email":     {kindString, eqOnly},
	"profile.firstName": {kindString, eqOnly},
	"profile.lastName":  {kindString, eqOnly},
}

// userSearch is the part of the users search language the fake supports.
var userSearch = grammar{
	"status":            {kindString, searchOps},
	"id":                {kindString, searchOps},
	"created":           {kindTime, searchDate},
	"activated":         {kindTime, searchDate},
	"statusChanged":     {kindTime, searchDate},
	"lastUpdated":       {kindTime, searchDate},
	"profile.login":     {kindString, searchOps},
	"profile.email":     {kindString, searchOps},
	"profile.firstName": {kindString, searchOps},
	"profile.lastName":  {kindString, searchOps},
}

// groupFilter is the documented filter subset for GET /api/v1/groups.
var groupFilter = grammar{
	"id":                    {kindString, eqOnly},
	"type":                  {kindString, eqOnly},
	"lastUpdated":           {kindTime, dateOps},
	"lastMembershipUpdated": {kindTime, dateOps},
}

// groupSearch is the part of the groups search language the fake supports.
var groupSearch = grammar{
	"id":                    {kindString, searchOps},
	"type":                  {kindString, searchOps},
	"profile.name":          {kindString, searchOps},
	"profile.description":   {kindString, searchOps},
	"created":               {kindTime, searchDate},
	"lastUpdated":           {kindTime, searchDate},
	"lastMembershipUpdated": {kindTime, searchDate},
}

// logFilter is the part of the System Log filter language the fake supports.
var logFilter = grammar{
	"eventType":      {kindString, searchOps},
	"target.id":      {kindString, eqOnly},
	"actor.id":       {kindString, eqOnly},
	"outcome.result": {kindString, eqOnly},
}

// expr is a parsed filter expression.
type expr interface {
	// match reports whether the object whose attributes get returns
	// matches. get returns the attribute's values (several for
	// multi-valued attributes such as target.id); nil means absent.
	match(get func(attr string) []string) bool
}

type orExpr struct{ left, right expr }
type andExpr struct{ left, right expr }
type cmpExpr struct {
	attr, op, value string
	kind            attrKind
	when            time.Time
	// caseInsensitive: search compares string values ignoring case.
	caseInsensitive bool
}

func (e orExpr) match(get func(string) []string) bool {
	return e.left.match(get) || e.right.match(get)
}

func (e andExpr) match(get func(string) []string) bool {
	return e.left.match(get) && e.right.match(get)
}

func (e cmpExpr) match(get func(string) []string) bool {
	for _, v := range get(e.attr) {
		if e.matchOne(v) {
			return true
		}
	}
	return false
}

func (e cmpExpr) matchOne(v string) bool {
	if e.kind == kindTime {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return false
		}
		switch e.op {
		case "eq":
			return t.Equal(e.when)
		case "gt":
			return t.After(e.when)
		case "ge":
			return !t.Before(e.when)
		case "lt":
			return t.Before(e.when)
		case "le":
			return !t.After(e.when)
		}
		return false
	}
	want := e.value
	if e.caseInsensitive {
		v, want = strings.ToLower(v), strings.ToLower(want)
	}
	switch e.op {
	case "eq":
		return v == want
	case "sw":
		return strings.HasPrefix(v, want)
	case "co":
		return strings.Contains(v, want)
	}
	return false
}

// parseFilter parses s against g. caseInsensitive selects search semantics
// for string values.
func parseFilter(s string, g grammar, caseInsensitive bool) (expr, error) {
	toks, err := tokenize(s)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks, g: g, ci: caseInsensitive}
	e, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.pos != len(p.toks) {
		return nil, fmt.Errorf("unexpected %q", p.toks[p.pos].text)
	}
	return e, nil
}

type token struct {
	text   string
	quoted bool
}

func tokenize(s string) ([]token, error) {
	var toks []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			i++
		case c == '(' || c == ')':
			toks = append(toks, token{text: string(c)})
			i++
		case c == '"':
			var b strings.Builder
			i++
			closed := false
			for i < len(s) {
				if s[i] == '\\' && i+1 < len(s) {
					b.WriteByte(s[i+1])
					i += 2
					continue
				}
				if s[i] == '"' {
					closed = true
					i++
					break
				}
				b.WriteByte(s[i])
				i++
			}
			if !closed {
				return nil, fmt.Errorf("unterminated string")
			}
			toks = append(toks, token{text: b.String(), quoted: true})
		default:
			j := i
			for j < len(s) && s[j] != ' ' && s[j] != '\t' && s[j] != '(' && s[j] != ')' && s[j] != '"' {
				j++
			}
			toks = append(toks, token{text: s[i:j]})
			i = j
		}
	}
	if len(toks) == 0 {
		return nil, fmt.Errorf("empty expression")
	}
	return toks, nil
}

type parser struct {
	toks []token
	pos  int
	g    grammar
	ci   bool
}

func (p *parser) peekWord(w string) bool {
	return p.pos < len(p.toks) && !p.toks[p.pos].quoted && strings.EqualFold(p.toks[p.pos].text, w)
}

func (p *parser) or() (expr, error) {
	left, err := p.and()
	if err != nil {
		return nil, err
	}
	for p.peekWord("or") {
		p.pos++
		right, err := p.and()
		if err != nil {
			return nil, err
		}
		left = orExpr{left, right}
	}
	return left, nil
}

func (p *parser) and() (expr, error) {
	left, err := p.term()
	if err != nil {
		return nil, err
	}
	for p.peekWord("and") {
		p.pos++
		right, err := p.term()
		if err != nil {
			return nil, err
		}
		left = andExpr{left, right}
	}
	return left, nil
}

func (p *parser) term() (expr, error) {
	if p.pos >= len(p.toks) {
		return nil, fmt.Errorf("expression ends early")
	}
	if p.peekWord("(") {
		p.pos++
		e, err := p.or()
		if err != nil {
			return nil, err
		}
		if !p.peekWord(")") {
			return nil, fmt.Errorf("missing )")
		}
		p.pos++
		return e, nil
	}
	if p.pos+3 > len(p.toks) {
		return nil, fmt.Errorf("incomplete comparison")
	}
	attr, op, val := p.toks[p.pos], p.toks[p.pos+1], p.toks[p.pos+2]
	p.pos += 3
	if attr.quoted || op.quoted {
		return nil, fmt.Errorf("malformed comparison")
	}
	rule, ok := p.g[attr.text]
	if !ok {
		return nil, fmt.Errorf("unsupported property %q", attr.text)
	}
	opName := strings.ToLower(op.text)
	allowed := false
	for _, o := range rule.ops {
		allowed = allowed || o == opName
	}
	if !allowed {
		return nil, fmt.Errorf("operator %q not supported for %q", op.text, attr.text)
	}
	if !val.quoted {
		return nil, fmt.Errorf("value for %q must be a quoted string", attr.text)
	}
	c := cmpExpr{attr: attr.text, op: opName, value: val.text, kind: rule.kind, caseInsensitive: p.ci}
	if rule.kind == kindTime {
		t, err := time.Parse(time.RFC3339Nano, val.text)
		if err != nil {
			return nil, fmt.Errorf("%q is not a date (yyyy-MM-ddTHH:mm:ss.SSSZ)", val.text)
		}
		c.when = t
	}
	return c, nil
}
