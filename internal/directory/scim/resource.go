package scim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dirsync/dirsync/internal/mailaddr"
)

// doc is a resource's attributes in canonical form: keys are the schema's
// attribute names as spelled there, extension attributes live in a map
// under the extension's URN, values are string, bool, []any or
// map[string]any. id, meta and schemas are not in it (they are derived);
// neither are a Group's members (stored as rows, see Member).
type doc = map[string]any

// decodeJSON decodes a request body holding one JSON object.
func decodeJSON(body []byte) (map[string]any, *Error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, badRequest(TypeInvalidSyntax, "the body is not valid JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, badRequest(TypeInvalidSyntax, "the body holds more than one JSON value")
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, badRequest(TypeInvalidSyntax, "the body must be a JSON object")
	}
	return m, nil
}

// parseResource checks a request body (POST or PUT) against rt's schemas
// and returns its attributes as a doc. Unknown attributes, unknown schema
// URNs and values of the wrong type are refused with the attribute's
// name; read-only attributes (id, meta, groups) are ignored and write-only
// ones (password) discarded, as RFC 7643 §7 says.
func parseResource(rt *resourceType, body []byte) (doc, *Error) {
	raw, e := decodeJSON(body)
	if e != nil {
		return nil, e
	}
	if e := checkSchemas(rt, raw); e != nil {
		return nil, e
	}
	out := doc{}
	for key, v := range raw {
		if strings.EqualFold(key, "schemas") {
			continue
		}
		if e := setAttribute(rt, out, key, v); e != nil {
			return nil, e
		}
	}
	return out, nil
}

// checkSchemas requires the schemas attribute (RFC 7643 §3) to list rt's
// core schema and nothing rt does not know.
func checkSchemas(rt *resourceType, raw map[string]any) *Error {
	var list []any
	for k, v := range raw {
		if strings.EqualFold(k, "schemas") {
			l, ok := v.([]any)
			if !ok {
				return badRequest(TypeInvalidSyntax, "schemas must be an array of schema URNs, e.g. [%q]", rt.Core.ID)
			}
			list = l
		}
	}
	if list == nil {
		return badRequest(TypeInvalidSyntax, "schemas is required: send [%q]", rt.Core.ID)
	}
	core := false
	for _, s := range list {
		urn, _ := s.(string)
		switch {
		case strings.EqualFold(urn, rt.Core.ID):
			core = true
		case rt.extension(urn) != nil:
		default:
			return badRequest(TypeInvalidSyntax, "schema %v is not one a %s has: use %q%s", s, rt.Name, rt.Core.ID, extensionList(rt))
		}
	}
	if !core {
		return badRequest(TypeInvalidSyntax, "schemas must include %q", rt.Core.ID)
	}
	return nil
}

func extensionList(rt *resourceType) string {
	var b strings.Builder
	for _, e := range rt.Extensions {
		fmt.Fprintf(&b, " or %q", e.ID)
	}
	return b.String()
}

// setAttribute stores one top-level key of a request body into d.
func setAttribute(rt *resourceType, d doc, key string, v any) *Error {
	if ext := rt.extension(key); ext != nil {
		m, ok := v.(map[string]any)
		if v == nil {
			delete(d, ext.ID)
			return nil
		}
		if !ok {
			return badRequest(TypeInvalidSyntax, "%s must be an object of %s attributes", ext.ID, ext.Name)
		}
		for k, sv := range m {
			if e := setExtension(d, ext, k, sv); e != nil {
				return e
			}
		}
		return nil
	}
	a, ext, e := resolveName(rt, key)
	if e != nil {
		return e
	}
	if ext != nil {
		return setExtension(d, ext, a.Name, v)
	}
	return setValue(d, a, v, a.Name)
}

// resolveName finds the top-level attribute a key names: a core attribute
// (optionally prefixed by the core URN), externalId, id or meta, or an
// extension attribute written "urn:…:attribute".
func resolveName(rt *resourceType, key string) (*attribute, *schema, *Error) {
	name := key
	if len(key) > len(rt.Core.ID) && strings.EqualFold(key[:len(rt.Core.ID)], rt.Core.ID) && key[len(rt.Core.ID)] == ':' {
		name = key[len(rt.Core.ID)+1:]
	}
	for _, ext := range rt.Extensions {
		if len(key) > len(ext.ID) && strings.EqualFold(key[:len(ext.ID)], ext.ID) && key[len(ext.ID)] == ':' {
			a := ext.attr(key[len(ext.ID)+1:])
			if a == nil {
				return nil, nil, badRequest(TypeInvalidSyntax, "attribute %q is not in the %s schema (%s)", key, ext.Name, ext.ID)
			}
			return a, ext, nil
		}
	}
	if a := commonAttr(name); a != nil {
		return a, nil, nil
	}
	if a := rt.Core.attr(name); a != nil {
		return a, nil, nil
	}
	return nil, nil, badRequest(TypeInvalidSyntax, "attribute %q is not in the %s schema (%s%s): remove it or map it to a %s attribute in the identity provider",
		key, rt.Name, rt.Core.ID, extensionList(rt), rt.Name)
}

func commonAttr(name string) *attribute {
	switch {
	case strings.EqualFold(name, "id"):
		return attrID
	case strings.EqualFold(name, "externalId"):
		return attrExternalID
	case strings.EqualFold(name, "meta"):
		return attrMeta
	}
	return nil
}

func setExtension(d doc, ext *schema, name string, v any) *Error {
	a := ext.attr(name)
	if a == nil {
		return badRequest(TypeInvalidSyntax, "attribute %q is not in the %s schema (%s)", name, ext.Name, ext.ID)
	}
	m, _ := d[ext.ID].(map[string]any)
	if m == nil {
		m = map[string]any{}
	}
	if e := setValue(m, a, v, ext.ID+":"+a.Name); e != nil {
		return e
	}
	if len(m) == 0 {
		delete(d, ext.ID)
	} else {
		d[ext.ID] = m
	}
	return nil
}

// setValue stores v for attribute a in m (deleting it for null), or
// refuses a value of the wrong type. Read-only and write-only attributes
// are dropped.
func setValue(m map[string]any, a *attribute, v any, path string) *Error {
	if a.mutability() == mutReadOnly || a.mutability() == mutWriteOnly {
		return nil
	}
	val, keep, e := normalize(a, v, path)
	if e != nil {
		return e
	}
	if !keep {
		delete(m, a.Name)
		return nil
	}
	m[a.Name] = val
	return nil
}

// normalize checks v against a and returns it in canonical form; keep is
// false for null, an empty array, or a value with nothing left in it.
func normalize(a *attribute, v any, path string) (any, bool, *Error) {
	if v == nil {
		return nil, false, nil
	}
	if a.Multi {
		list, ok := v.([]any)
		if !ok {
			return nil, false, badRequest(TypeInvalidValue, "%s is multi-valued: send an array", path)
		}
		out := make([]any, 0, len(list))
		for _, item := range list {
			val, keep, e := normalizeOne(a, item, path)
			if e != nil {
				return nil, false, e
			}
			if keep {
				out = append(out, val)
			}
		}
		return out, len(out) > 0, nil
	}
	return normalizeOne(a, v, path)
}

// normalizeOne checks one (non-array) value of a.
func normalizeOne(a *attribute, v any, path string) (any, bool, *Error) {
	if v == nil {
		return nil, false, nil
	}
	switch a.Type {
	case tComplex:
		m, ok := v.(map[string]any)
		if !ok {
			// Entra ID sends a complex attribute with a value
			// sub-attribute (enterprise manager) as a plain string.
			if s, isStr := v.(string); isStr && a.sub("value") != nil {
				return map[string]any{"value": s}, true, nil
			}
			return nil, false, badRequest(TypeInvalidValue, "%s is complex: send an object of its sub-attributes", path)
		}
		out := map[string]any{}
		for k, sv := range m {
			s := a.sub(k)
			if s == nil {
				return nil, false, badRequest(TypeInvalidSyntax, "%s has no sub-attribute %q", path, k)
			}
			if e := setValue(out, s, sv, path+"."+s.Name); e != nil {
				return nil, false, e
			}
		}
		return out, len(out) > 0, nil
	case tBoolean:
		b, ok := parseBool(v)
		if !ok {
			return nil, false, badRequest(TypeInvalidValue, "%s must be true or false, not %v", path, describe(v))
		}
		return b, true, nil
	default:
		switch s := v.(type) {
		case string:
			return s, true, nil
		case json.Number:
			return s.String(), true, nil
		}
		return nil, false, badRequest(TypeInvalidValue, "%s must be a string, not %v", path, describe(v))
	}
}

// parseBool accepts a JSON boolean, or the strings "true" and "false" in
// any case: Entra ID sends booleans as "True"/"False" in PATCH values.
func parseBool(v any) (bool, bool) {
	switch b := v.(type) {
	case bool:
		return b, true
	case string:
		switch {
		case strings.EqualFold(b, "true"):
			return true, true
		case strings.EqualFold(b, "false"):
			return false, true
		}
	}
	return false, false
}

func describe(v any) string {
	switch x := v.(type) {
	case string:
		return strconv.Quote(x)
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	}
	return fmt.Sprint(v)
}

// Member is one member of a Group: a User or a Group of the same account.
type Member struct {
	ID   string
	Type string // User or Group
}

// userFields are the columns derived from a User doc.
type userFields struct {
	userName   string
	externalID *string
	active     *bool
	email      string
}

func stringAttr(d doc, name string) (string, bool) {
	s, ok := d[name].(string)
	return s, ok
}

// deriveUser reads the columns of a User doc and checks userName.
func deriveUser(d doc) (userFields, *Error) {
	var f userFields
	f.userName, _ = stringAttr(d, "userName")
	if strings.TrimSpace(f.userName) == "" {
		return f, badRequest(TypeInvalidValue, "userName is required: the user's unique sign-in name (Okta: the login, Entra ID: the userPrincipalName)")
	}
	if x, ok := stringAttr(d, "externalId"); ok {
		f.externalID = &x
	}
	if b, ok := d["active"].(bool); ok {
		f.active = &b
	}
	f.email = signInEmail(d, f.userName)
	return f, nil
}

// signInEmail is the address a User signs in with: the primary email,
// else the work email, else userName when it is an address, else the
// first email. The first candidate present decides: when it is not an
// address dirsync accepts (internal/mailaddr), the user has no sign-in
// email (skipped and counted as no_email), rather than falling back to
// another candidate that might be someone else's address.
func signInEmail(d doc, userName string) string {
	emails, _ := d["emails"].([]any)
	pick := func(ok func(map[string]any) bool) (string, bool) {
		for _, e := range emails {
			m, _ := e.(map[string]any)
			if m != nil && ok(m) {
				v, _ := m["value"].(string)
				return v, true
			}
		}
		return "", false
	}
	candidate, found := pick(func(m map[string]any) bool { p, _ := m["primary"].(bool); return p })
	if !found {
		candidate, found = pick(func(m map[string]any) bool { t, _ := m["type"].(string); return strings.EqualFold(t, "work") })
	}
	if !found && strings.Contains(userName, "@") {
		candidate, found = userName, true
	}
	if !found {
		candidate, found = pick(func(map[string]any) bool { return true })
	}
	if !found {
		return ""
	}
	return mailaddr.Normalize(candidate)
}

// deriveGroup reads a Group doc's displayName, externalId and members,
// removing the members from d (they are stored as rows).
func deriveGroup(d doc) (displayName string, externalID *string, members []Member, e *Error) {
	displayName, _ = stringAttr(d, "displayName")
	if strings.TrimSpace(displayName) == "" {
		return "", nil, nil, badRequest(TypeInvalidValue, "displayName is required: the group's name (bindings may name it)")
	}
	if x, ok := stringAttr(d, "externalId"); ok {
		externalID = &x
	}
	members, e = membersOf(d["members"])
	delete(d, "members")
	return displayName, externalID, members, e
}

// membersOf reads a members value (an array of {value, type}).
func membersOf(v any) ([]Member, *Error) {
	list, _ := v.([]any)
	out := make([]Member, 0, len(list))
	for _, item := range list {
		m, _ := item.(map[string]any)
		id, _ := m["value"].(string)
		if id == "" {
			return nil, badRequest(TypeInvalidValue, "every member needs a value: the id of a User or Group")
		}
		t, _ := m["type"].(string)
		switch {
		case t == "", strings.EqualFold(t, "User"), strings.EqualFold(t, "Group"):
		default:
			return nil, badRequest(TypeInvalidValue, "member %q has type %q: use User or Group", id, t)
		}
		if t != "" {
			t = strings.ToUpper(t[:1]) + strings.ToLower(t[1:])
		}
		out = append(out, Member{ID: id, Type: t})
	}
	return out, nil
}

// Resource is one stored User or Group as it is answered.
type Resource struct {
	ID       string
	Kind     string // User or Group
	Doc      doc
	Members  []Member // Groups only
	Created  time.Time
	Modified time.Time
	Version  int64
}

// ETag is the resource's version as an entity tag (weak: the JSON form
// of one version may vary in key order).
func (r *Resource) ETag() string { return ETag(r.Version) }

// ETag formats a version as a weak entity tag.
func ETag(version int64) string { return `W/"` + strconv.FormatInt(version, 10) + `"` }

// ParseETag reads a version from an entity tag (weak or strong), or
// reports false.
func ParseETag(tag string) (int64, bool) {
	tag = strings.TrimPrefix(strings.TrimSpace(tag), "W/")
	if len(tag) < 2 || tag[0] != '"' || tag[len(tag)-1] != '"' {
		return 0, false
	}
	n, err := strconv.ParseInt(tag[1:len(tag)-1], 10, 64)
	return n, err == nil
}

// Projection selects the attributes an answer shows (RFC 7644 §3.9):
// Attributes, when set, lists the only ones to show; Excluded the ones to
// leave out. id and schemas are always shown.
type Projection struct {
	Attributes []string
	Excluded   []string
}

func (p Projection) shows(name string) bool {
	if strings.EqualFold(name, "id") || strings.EqualFold(name, "schemas") {
		return true
	}
	if len(p.Attributes) > 0 {
		return slices.ContainsFunc(p.Attributes, func(a string) bool { return topLevel(a, name) })
	}
	return !slices.ContainsFunc(p.Excluded, func(a string) bool { return topLevel(a, name) })
}

// topLevel reports whether an attributes/excludedAttributes entry (maybe
// "name.givenName" or URN-prefixed) names top-level attribute name.
func topLevel(entry, name string) bool {
	entry = strings.TrimSpace(entry)
	for _, urn := range []string{URNUser, URNGroup} {
		if len(entry) > len(urn) && strings.EqualFold(entry[:len(urn)], urn) && entry[len(urn)] == ':' {
			entry = entry[len(urn)+1:]
		}
	}
	if i := strings.IndexByte(entry, '.'); i >= 0 && !strings.HasPrefix(strings.ToLower(entry), "urn:") {
		entry = entry[:i]
	}
	return strings.EqualFold(entry, name)
}

// JSON is the resource as answered, with meta.location under base (the
// account's SCIM base URL, e.g. https://dirsync.example/scim/v2/acme).
func (r *Resource) JSON(base string, p Projection) map[string]any {
	rt := userType
	if r.Kind == groupType.Name {
		rt = groupType
	}
	out := make(map[string]any, len(r.Doc)+4)
	schemas := []string{rt.Core.ID}
	for k, v := range r.Doc {
		if !p.shows(k) {
			continue
		}
		if ext := rt.extension(k); ext != nil {
			schemas = append(schemas, ext.ID)
		}
		out[k] = v
	}
	out["schemas"] = schemas
	out["id"] = r.ID
	if r.Kind == groupType.Name && p.shows("members") {
		members := make([]any, 0, len(r.Members))
		for _, m := range r.Members {
			members = append(members, map[string]any{"value": m.ID, "type": m.Type, "$ref": base + "/" + m.Type + "s/" + m.ID})
		}
		out["members"] = members
	}
	if p.shows("meta") {
		out["meta"] = map[string]any{
			"resourceType": r.Kind,
			"created":      r.Created.UTC().Format(time.RFC3339Nano),
			"lastModified": r.Modified.UTC().Format(time.RFC3339Nano),
			"location":     base + rt.Endpoint + "/" + r.ID,
			"version":      r.ETag(),
		}
	}
	return out
}

// foldASCII lower-cases ASCII letters only: case-insensitive SCIM
// attributes (userName, displayName, emails) compare that way, so that no
// Unicode folding (the Kelvin sign, dotted İ) makes two names one.
func foldASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
