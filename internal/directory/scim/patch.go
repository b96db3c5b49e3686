package scim

import (
	"fmt"
	"net/http"
	"reflect"
	"strings"
)

// Op is one PATCH operation (RFC 7644 §3.5.2).
type Op struct {
	// Op is add, remove or replace; Entra ID's "Add", "Replace" and
	// "Remove" are read case-insensitively.
	Op    string
	Path  string
	Value any
	// hasValue: the operation carried a "value" member (even null).
	hasValue bool
}

// maxPatchOps bounds the operations of one PATCH request.
const maxPatchOps = 1000

// parsePatch reads a PatchOp request body.
func parsePatch(body []byte) ([]Op, *Error) {
	raw, e := decodeJSON(body)
	if e != nil {
		return nil, e
	}
	var schemas, operations any
	for k, v := range raw {
		switch {
		case strings.EqualFold(k, "schemas"):
			schemas = v
		case strings.EqualFold(k, "Operations"):
			operations = v
		default:
			return nil, badRequest(TypeInvalidSyntax, "a PATCH body has schemas and Operations only, not %q", k)
		}
	}
	list, _ := schemas.([]any)
	found := false
	for _, s := range list {
		if u, _ := s.(string); strings.EqualFold(u, URNPatchOp) {
			found = true
		}
	}
	if !found {
		return nil, badRequest(TypeInvalidSyntax, "schemas must be [%q] in a PATCH request", URNPatchOp)
	}
	items, ok := operations.([]any)
	if !ok || len(items) == 0 {
		return nil, badRequest(TypeInvalidSyntax, "Operations must be a non-empty array of {op, path, value}")
	}
	if len(items) > maxPatchOps {
		return nil, &Error{Status: http.StatusRequestEntityTooLarge, ScimType: TypeTooMany,
			Detail: fmt.Sprintf("%d operations in one PATCH; at most %d", len(items), maxPatchOps)}
	}
	ops := make([]Op, 0, len(items))
	for i, it := range items {
		m, ok := it.(map[string]any)
		if !ok {
			return nil, badRequest(TypeInvalidSyntax, "Operations[%d] must be an object", i)
		}
		var op Op
		for k, v := range m {
			switch {
			case strings.EqualFold(k, "op"):
				s, _ := v.(string)
				op.Op = strings.ToLower(s)
			case strings.EqualFold(k, "path"):
				s, ok := v.(string)
				if !ok && v != nil {
					return nil, badRequest(TypeInvalidPath, "Operations[%d].path must be a string", i)
				}
				op.Path = strings.TrimSpace(s)
			case strings.EqualFold(k, "value"):
				op.Value, op.hasValue = v, true
			default:
				return nil, badRequest(TypeInvalidSyntax, "Operations[%d] has %q; an operation has op, path and value", i, k)
			}
		}
		switch op.Op {
		case "add", "replace":
			if !op.hasValue {
				return nil, badRequest(TypeInvalidValue, "Operations[%d]: %s needs a value", i, op.Op)
			}
		case "remove":
			if op.Path == "" {
				return nil, badRequest(TypeNoTarget, "Operations[%d]: remove needs a path", i)
			}
		default:
			return nil, badRequest(TypeInvalidSyntax, "Operations[%d].op is %q: use add, remove or replace", i, op.Op)
		}
		ops = append(ops, op)
	}
	return ops, nil
}

// patchPath is a parsed PATCH path: attrPath, valuePath, or valuePath with
// a sub-attribute (RFC 7644 §3.5.2, "PATH"); or a whole extension.
type patchPath struct {
	text   string
	ext    *schema    // the extension the attribute is in (or the whole extension when top is nil)
	top    *attribute // nil: the whole extension ext
	filter *Filter    // the value filter, if any
	sub    *attribute // the sub-attribute, if any
}

func parsePatchPath(rt *resourceType, s string) (*patchPath, *Error) {
	invalid := func(format string, args ...any) *Error {
		return badRequest(TypeInvalidPath, "path %q: %s", s, fmt.Sprintf(format, args...))
	}
	if ext := rt.extension(s); ext != nil {
		return &patchPath{text: s, ext: ext}, nil
	}
	if len(s) > maxFilterLen {
		return nil, invalid("too long")
	}
	p := &filterParser{src: s}
	if e := p.next(); e != nil || p.tok.kind != tokWord {
		return nil, invalid("not an attribute path")
	}
	ap, ok := parseAttrPath(p.tok.text)
	if !ok {
		return nil, invalid("not an attribute path")
	}
	top, sub, ext, fe := lookup(rt, nil, ap)
	if fe != nil {
		return nil, invalid("%s", fe.Detail)
	}
	out := &patchPath{text: s, ext: ext, top: top, sub: sub}
	if e := p.next(); e != nil {
		return nil, invalid("%s", e.Detail)
	}
	if p.tok.kind == tokLBracket {
		if sub != nil || !top.Multi || top.Type != tComplex {
			return nil, invalid("a value filter applies to a multi-valued complex attribute")
		}
		if e := p.next(); e != nil {
			return nil, invalid("%s", e.Detail)
		}
		inner, e := p.or()
		if e != nil {
			return nil, invalid("%s", e.Detail)
		}
		if p.tok.kind != tokRBracket {
			return nil, invalid("missing ]")
		}
		f := &Filter{rt: rt, root: inner}
		if e := f.check(inner, top); e != nil {
			return nil, invalid("%s", e.Detail)
		}
		out.filter = f
		// A sub-attribute after "]" is lexed as one word ".name".
		if e := p.next(); e != nil {
			return nil, invalid("%s", e.Detail)
		}
		if p.tok.kind == tokWord && strings.HasPrefix(p.tok.text, ".") {
			if out.sub = top.sub(p.tok.text[1:]); out.sub == nil {
				return nil, invalid("%s has no sub-attribute %q", top.Name, p.tok.text[1:])
			}
			if e := p.next(); e != nil {
				return nil, invalid("%s", e.Detail)
			}
		}
	}
	if p.tok.kind != tokEOF {
		return nil, invalid("unexpected %s", p.describe())
	}
	if m := top.mutability(); m == mutReadOnly || (out.sub != nil && out.sub.mutability() == mutReadOnly) {
		return nil, badRequest(TypeMutability, "path %q: the attribute is read-only", s)
	}
	return out, nil
}

// applyPatch applies ops in order to d (a copy the caller owns), for a
// resource of type rt. Groups carry their members in d["members"] as
// []any of {value, type}. Nothing is applied when an operation fails.
func applyPatch(rt *resourceType, d doc, ops []Op) *Error {
	for i, op := range ops {
		if e := applyOp(rt, d, op); e != nil {
			e.Detail = fmt.Sprintf("Operations[%d] (%s): %s", i, op.Op, e.Detail)
			return e
		}
	}
	return nil
}

func applyOp(rt *resourceType, d doc, op Op) *Error {
	if op.Path == "" {
		// add/replace without a path: the value is an object of
		// attributes (Okta: {"active": false}; {"id", "displayName"} for
		// groups, whose id is read-only and ignored).
		m, ok := op.Value.(map[string]any)
		if !ok {
			return badRequest(TypeInvalidValue, "without a path, the value must be an object of attributes")
		}
		for k, v := range m {
			if strings.EqualFold(k, "schemas") {
				continue
			}
			if ext := rt.extension(k); ext != nil {
				sm, ok := v.(map[string]any)
				if !ok {
					return badRequest(TypeInvalidValue, "%s must be an object", ext.ID)
				}
				for sk, sv := range sm {
					a := ext.attr(sk)
					if a == nil {
						return badRequest(TypeInvalidPath, "%s has no attribute %q", ext.ID, sk)
					}
					if e := setPath(d, &patchPath{ext: ext, top: a}, op.Op, sv); e != nil {
						return e
					}
				}
				continue
			}
			a, ext, e := resolveName(rt, k)
			if e != nil {
				e.ScimType = TypeInvalidPath
				return e
			}
			if a.mutability() == mutReadOnly || a.mutability() == mutWriteOnly {
				continue
			}
			if e := setPath(d, &patchPath{ext: ext, top: a}, op.Op, v); e != nil {
				return e
			}
		}
		return nil
	}
	p, e := parsePatchPath(rt, op.Path)
	if e != nil {
		return e
	}
	if p.top != nil && p.top.mutability() == mutWriteOnly {
		return nil // password: discarded
	}
	if op.Op == "remove" {
		return removePath(d, p, op)
	}
	return setPath(d, p, op.Op, op.Value)
}

// holder returns the map p's top-level attribute lives in, creating the
// extension's object when create is set.
func holder(d doc, p *patchPath, create bool) map[string]any {
	if p.ext == nil {
		return d
	}
	m, _ := d[p.ext.ID].(map[string]any)
	if m == nil && create {
		m = map[string]any{}
		d[p.ext.ID] = m
	}
	return m
}

// setPath is add or replace at p.
func setPath(d doc, p *patchPath, op string, v any) *Error {
	if p.top == nil { // the whole extension
		m, ok := v.(map[string]any)
		if !ok {
			return badRequest(TypeInvalidValue, "%s must be an object", p.ext.ID)
		}
		if op == "replace" {
			delete(d, p.ext.ID)
		}
		for k, sv := range m {
			a := p.ext.attr(k)
			if a == nil {
				return badRequest(TypeInvalidPath, "%s has no attribute %q", p.ext.ID, k)
			}
			if e := setPath(d, &patchPath{ext: p.ext, top: a}, op, sv); e != nil {
				return e
			}
		}
		return nil
	}
	h := holder(d, p, true)
	defer cleanExtension(d, p)
	a := p.top
	switch {
	case p.filter != nil:
		return setFiltered(h, p, v)
	case p.sub != nil && a.Multi:
		return badRequest(TypeInvalidPath, "%s is multi-valued: select elements with a filter, e.g. %s[type eq \"work\"].%s", a.Name, a.Name, p.sub.Name)
	case p.sub != nil:
		m, _ := h[a.Name].(map[string]any)
		if m == nil {
			m = map[string]any{}
		}
		if e := setValue(m, p.sub, v, a.Name+"."+p.sub.Name); e != nil {
			return e
		}
		if len(m) == 0 {
			delete(h, a.Name)
		} else {
			h[a.Name] = m
		}
		return nil
	case a.Multi:
		vals, keep, e := normalize(a, asList(v), a.Name)
		if e != nil {
			return e
		}
		if op == "replace" || h[a.Name] == nil {
			if keep {
				h[a.Name] = vals
			} else {
				delete(h, a.Name)
			}
			return nil
		}
		list, _ := h[a.Name].([]any)
		for _, nv := range values(vals) {
			if !containsValue(list, nv) {
				list = append(list, nv)
			}
		}
		h[a.Name] = list
		return nil
	case a.Type == tComplex && op == "add":
		// add merges sub-attributes into a complex attribute.
		val, keep, e := normalize(a, v, a.Name)
		if e != nil || !keep {
			return e
		}
		m, _ := h[a.Name].(map[string]any)
		if m == nil {
			m = map[string]any{}
		}
		for k, sv := range val.(map[string]any) {
			m[k] = sv
		}
		h[a.Name] = m
		return nil
	}
	return setValue(h, a, v, a.Name)
}

// asList wraps a single value given for a multi-valued attribute.
func asList(v any) any {
	if _, ok := v.([]any); ok || v == nil {
		return v
	}
	return []any{v}
}

func containsValue(list []any, v any) bool {
	for _, x := range list {
		if sameValue(x, v) {
			return true
		}
	}
	return false
}

// sameValue compares two elements of a multi-valued attribute: by their
// value sub-attribute when both have one, else whole.
func sameValue(a, b any) bool {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if aok && bok && am["value"] != nil && bm["value"] != nil {
		return am["value"] == bm["value"]
	}
	return reflect.DeepEqual(a, b)
}

// setFiltered is add/replace at attr[filter] or attr[filter].sub. When no
// element matches and the filter is a conjunction of equalities (Entra
// ID's emails[type eq "work"].value), a new element is made from them.
func setFiltered(h map[string]any, p *patchPath, v any) *Error {
	a := p.top
	list, _ := h[a.Name].([]any)
	matched := false
	for i, el := range list {
		m, ok := el.(map[string]any)
		if !ok || !p.filter.eval(p.filter.root, m, a) {
			continue
		}
		matched = true
		nm := copyMap(m)
		if p.sub != nil {
			if e := setValue(nm, p.sub, v, a.Name+"."+p.sub.Name); e != nil {
				return e
			}
		} else {
			val, keep, e := normalizeOne(a, v, a.Name)
			if e != nil {
				return e
			}
			if keep {
				for k, sv := range val.(map[string]any) {
					nm[k] = sv
				}
			}
		}
		list[i] = nm
	}
	if matched {
		h[a.Name] = list
		return nil
	}
	seed, ok := equalities(p.filter.root, a)
	if !ok {
		return badRequest(TypeNoTarget, "no %s value matches %s", a.Name, p.text)
	}
	if p.sub != nil {
		if e := setValue(seed, p.sub, v, a.Name+"."+p.sub.Name); e != nil {
			return e
		}
	} else {
		val, keep, e := normalizeOne(a, v, a.Name)
		if e != nil {
			return e
		}
		if keep {
			for k, sv := range val.(map[string]any) {
				seed[k] = sv
			}
		}
	}
	h[a.Name] = append(list, seed)
	return nil
}

// equalities returns the sub-attribute values a filter made only of
// "sub eq value" joined by and requires, or false.
func equalities(x expr, parent *attribute) (map[string]any, bool) {
	switch n := x.(type) {
	case *compareExpr:
		s := parent.sub(n.path.name)
		if n.op != "eq" || s == nil || n.value == nil {
			return nil, false
		}
		val, keep, e := normalizeOne(s, n.value, s.Name)
		if e != nil || !keep {
			return nil, false
		}
		return map[string]any{s.Name: val}, true
	case *logicalExpr:
		if !n.and {
			return nil, false
		}
		l, lok := equalities(n.left, parent)
		r, rok := equalities(n.right, parent)
		if !lok || !rok {
			return nil, false
		}
		for k, v := range r {
			l[k] = v
		}
		return l, true
	}
	return nil, false
}

func copyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// removePath is remove at p. Entra ID removes group members with path
// "members" and a value listing them: then only those are removed (RFC
// 7644 would remove every member); Okta uses members[value eq "…"].
func removePath(d doc, p *patchPath, op Op) *Error {
	if p.top == nil {
		delete(d, p.ext.ID)
		return nil
	}
	h := holder(d, p, false)
	if h == nil {
		return nil
	}
	defer cleanExtension(d, p)
	a := p.top
	switch {
	case p.filter != nil:
		list, _ := h[a.Name].([]any)
		kept := list[:0:0]
		for _, el := range list {
			m, ok := el.(map[string]any)
			if !ok || !p.filter.eval(p.filter.root, m, a) {
				kept = append(kept, el)
				continue
			}
			if p.sub != nil {
				nm := copyMap(m)
				delete(nm, p.sub.Name)
				kept = append(kept, nm)
			}
		}
		setOrDelete(h, a.Name, kept)
	case p.sub != nil && a.Multi:
		list, _ := h[a.Name].([]any)
		for i, el := range list {
			if m, ok := el.(map[string]any); ok {
				nm := copyMap(m)
				delete(nm, p.sub.Name)
				list[i] = nm
			}
		}
	case p.sub != nil:
		if m, ok := h[a.Name].(map[string]any); ok {
			nm := copyMap(m)
			delete(nm, p.sub.Name)
			setOrDelete(h, a.Name, nm)
		}
	case a.Multi && op.hasValue && op.Value != nil:
		vals, _, e := normalize(a, asList(op.Value), a.Name)
		if e != nil {
			return e
		}
		list, _ := h[a.Name].([]any)
		kept := list[:0:0]
		for _, el := range list {
			if !containsValue(values(vals), el) {
				kept = append(kept, el)
			}
		}
		setOrDelete(h, a.Name, kept)
	default:
		delete(h, a.Name)
	}
	return nil
}

func setOrDelete(h map[string]any, name string, v any) {
	switch x := v.(type) {
	case []any:
		if len(x) == 0 {
			delete(h, name)
			return
		}
	case map[string]any:
		if len(x) == 0 {
			delete(h, name)
			return
		}
	}
	h[name] = v
}

// cleanExtension drops an extension object left empty.
func cleanExtension(d doc, p *patchPath) {
	if p.ext == nil {
		return
	}
	if m, ok := d[p.ext.ID].(map[string]any); ok && len(m) == 0 {
		delete(d, p.ext.ID)
	}
}

// memberChange is a PATCH that only adds or removes Group members, which
// the store applies as row inserts and deletes without reading the
// group's other members.
type memberChange struct {
	add, remove []Member
}

// memberOnly recognises a PATCH made of member additions (path members
// with a value) and removals (members[value eq "…"], or Entra ID's path
// members with a value); any other operation needs the general path.
func memberOnly(ops []Op) (memberChange, bool) {
	var mc memberChange
	for _, op := range ops {
		switch {
		case strings.EqualFold(op.Path, "members") && op.Op == "add":
			ms, e := membersOf(asList(op.Value))
			if e != nil {
				return mc, false
			}
			mc.add = append(mc.add, ms...)
		case strings.EqualFold(op.Path, "members") && op.Op == "remove" && op.hasValue && op.Value != nil:
			ms, e := membersOf(asList(op.Value))
			if e != nil {
				return mc, false
			}
			mc.remove = append(mc.remove, ms...)
		case op.Op == "remove":
			ids, ok := memberFilterIDs(op.Path)
			if !ok {
				return mc, false
			}
			for _, id := range ids {
				mc.remove = append(mc.remove, Member{ID: id})
			}
		default:
			return mc, false
		}
		if len(mc.add) > 0 && len(mc.remove) > 0 {
			return mc, false // order matters: take the general path
		}
	}
	return mc, true
}

// memberFilterIDs reads members[value eq "a" or value eq "b"].
func memberFilterIDs(path string) ([]string, bool) {
	p, e := parsePatchPath(groupType, path)
	if e != nil || p.filter == nil || p.sub != nil || p.top.Name != "members" {
		return nil, false
	}
	var ids []string
	var walk func(x expr) bool
	walk = func(x expr) bool {
		switch n := x.(type) {
		case *compareExpr:
			s, ok := n.value.(string)
			if n.op != "eq" || !ok || !strings.EqualFold(n.path.name, "value") {
				return false
			}
			ids = append(ids, s)
			return true
		case *logicalExpr:
			return !n.and && walk(n.left) && walk(n.right)
		}
		return false
	}
	return ids, walk(p.filter.root)
}
