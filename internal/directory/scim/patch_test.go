package scim

import (
	"encoding/json"
	"reflect"
	"testing"
)

func patchBody(ops string) []byte {
	return []byte(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":` + ops + `}`)
}

func applyJSON(t *testing.T, rt *resourceType, d doc, ops string) (doc, *Error) {
	t.Helper()
	parsed, e := parsePatch(patchBody(ops))
	if e != nil {
		return nil, e
	}
	d = deepCopy(d)
	return d, applyPatch(rt, d, parsed)
}

func asJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

// TestPatchDialects: the PATCH shapes Entra ID and Okta send (see
// docs/scim.md) and RFC 7644 §3.5.2 paths.
func TestPatchDialects(t *testing.T) {
	base := testUser().Doc
	for _, c := range []struct {
		name, ops string
		check     func(doc) bool
	}{
		{"entra capitalised Replace with string boolean", `[{"op":"Replace","path":"active","value":"False"}]`,
			func(d doc) bool { return d["active"] == false }},
		{"entra True", `[{"op":"Replace","path":"active","value":"True"}]`,
			func(d doc) bool { return d["active"] == true }},
		{"okta replace without path", `[{"op":"replace","value":{"active":false}}]`,
			func(d doc) bool { return d["active"] == false }},
		{"okta replace without path, read-only id ignored", `[{"op":"replace","value":{"id":"x","displayName":"B J"}}]`,
			func(d doc) bool { return d["displayName"] == "B J" }},
		{"entra emails[type eq work].value replaces the work address", `[{"op":"Replace","path":"emails[type eq \"work\"].value","value":"new@example.com"}]`,
			func(d doc) bool {
				return asJSON(d["emails"]) == `[{"primary":true,"type":"work","value":"new@example.com"},{"type":"home","value":"babs@jensen.org"}]`
			}},
		{"entra add on a missing filtered element creates it", `[{"op":"Add","path":"phoneNumbers[type eq \"mobile\"].value","value":"+1 555"}]`,
			func(d doc) bool { return asJSON(d["phoneNumbers"]) == `[{"type":"mobile","value":"+1 555"}]` }},
		{"name.givenName", `[{"op":"replace","path":"name.givenName","value":"Babs"}]`,
			func(d doc) bool {
				return d["name"].(map[string]any)["givenName"] == "Babs" && d["name"].(map[string]any)["familyName"] == "Jensen"
			}},
		{"enterprise extension path", `[{"op":"Replace","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department","value":"Sales"}]`,
			func(d doc) bool { return d[URNEnterpriseUser].(map[string]any)["department"] == "Sales" }},
		{"entra manager as a plain string", `[{"op":"Add","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager","value":"m-2"}]`,
			func(d doc) bool { return asJSON(d[URNEnterpriseUser].(map[string]any)["manager"]) == `{"value":"m-2"}` }},
		{"remove the extension attribute", `[{"op":"Remove","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber"}]`,
			func(d doc) bool { _, has := d[URNEnterpriseUser].(map[string]any)["employeeNumber"]; return !has }},
		{"add appends to a multi-valued attribute without duplicates", `[{"op":"add","path":"emails","value":[{"value":"babs@jensen.org","type":"home"},{"value":"x@y.example"}]}]`,
			func(d doc) bool { return len(d["emails"].([]any)) == 3 }},
		{"remove with a value filter", `[{"op":"remove","path":"emails[type eq \"home\"]"}]`,
			func(d doc) bool { return len(d["emails"].([]any)) == 1 }},
		{"password is discarded", `[{"op":"replace","path":"password","value":"hunter2"}]`,
			func(d doc) bool { _, has := d["password"]; return !has }},
		{"ops apply in order", `[{"op":"replace","path":"title","value":"a"},{"op":"remove","path":"title"},{"op":"add","path":"title","value":"b"}]`,
			func(d doc) bool { return d["title"] == "b" }},
	} {
		d, e := applyJSON(t, userType, base, c.ops)
		if e != nil {
			t.Errorf("%s: %v", c.name, e)
			continue
		}
		if !c.check(d) {
			t.Errorf("%s: doc %s", c.name, asJSON(d))
		}
	}
}

// TestPatchGroupMembers: Okta removes with members[value eq "…"], Entra ID
// with path members and a value list; both add with path members.
func TestPatchGroupMembers(t *testing.T) {
	d := doc{"displayName": "Pro", "members": []any{
		map[string]any{"value": "u1", "type": "User"}, map[string]any{"value": "u2", "type": "User"}, map[string]any{"value": "u3", "type": "User"},
	}}
	members := func(d doc) []string {
		var out []string
		for _, m := range d["members"].([]any) {
			out = append(out, m.(map[string]any)["value"].(string))
		}
		return out
	}
	for _, c := range []struct {
		ops  string
		want []string
	}{
		{`[{"op":"remove","path":"members[value eq \"u2\"]"}]`, []string{"u1", "u3"}},
		{`[{"op":"Remove","path":"members","value":[{"value":"u1"},{"value":"u3"}]}]`, []string{"u2"}},
		{`[{"op":"Add","path":"members","value":[{"value":"u4","display":"Dee"}]}]`, []string{"u1", "u2", "u3", "u4"}},
		{`[{"op":"replace","path":"members","value":[{"value":"u9"}]}]`, []string{"u9"}},
	} {
		got, e := applyJSON(t, groupType, d, c.ops)
		if e != nil {
			t.Errorf("%s: %v", c.ops, e)
			continue
		}
		if !reflect.DeepEqual(members(got), c.want) {
			t.Errorf("%s: members %v, want %v", c.ops, members(got), c.want)
		}
	}
	// RFC 7644: remove members without a value removes them all.
	got, e := applyJSON(t, groupType, d, `[{"op":"remove","path":"members"}]`)
	if e != nil || got["members"] != nil {
		t.Errorf("remove all: %v %v", e, got["members"])
	}
	// The fast path recognises the same shapes.
	for ops, want := range map[string]memberChange{
		`[{"op":"remove","path":"members[value eq \"a\" or value eq \"b\"]"}]`:  {remove: []Member{{ID: "a"}, {ID: "b"}}},
		`[{"op":"Remove","path":"members","value":[{"value":"a"}]}]`:            {remove: []Member{{ID: "a"}}},
		`[{"op":"Add","path":"members","value":[{"value":"a","type":"user"}]}]`: {add: []Member{{ID: "a", Type: "User"}}},
	} {
		parsed, e := parsePatch(patchBody(ops))
		if e != nil {
			t.Fatal(e)
		}
		mc, ok := memberOnly(parsed)
		if !ok || !reflect.DeepEqual(mc, want) {
			t.Errorf("%s: fast path %+v %v", ops, mc, ok)
		}
	}
	for _, ops := range []string{
		`[{"op":"remove","path":"members"}]`,
		`[{"op":"replace","path":"members","value":[]}]`,
		`[{"op":"remove","path":"members[type eq \"User\"]"}]`,
		`[{"op":"add","path":"members","value":[{"value":"a"}]},{"op":"remove","path":"members[value eq \"a\"]"}]`,
	} {
		parsed, _ := parsePatch(patchBody(ops))
		if _, ok := memberOnly(parsed); ok {
			t.Errorf("%s took the fast path", ops)
		}
	}
}

// TestBadPatches are refused with the scimType RFC 7644 gives.
func TestBadPatches(t *testing.T) {
	for _, c := range []struct {
		body, scimType string
	}{
		{`{"Operations":[{"op":"add","path":"title","value":"x"}]}`, TypeInvalidSyntax},
		{`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[]}`, TypeInvalidSyntax},
		{`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"move","path":"title"}]}`, TypeInvalidSyntax},
		{`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"remove"}]}`, TypeNoTarget},
		{`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"add","path":"title"}]}`, TypeInvalidValue},
		{`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"nosuch","value":"x"}]}`, TypeInvalidPath},
		{`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"emails[type eq \"work\"","value":"x"}]}`, TypeInvalidPath},
		{`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"id","value":"x"}]}`, TypeMutability},
		{`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":"maybe"}]}`, TypeInvalidValue},
		{`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"nosuch":1}}]}`, TypeInvalidPath},
		{`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"emails[type eq \"fax\"]","value":{"value":"x"}}]}`, ""},
		{`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"emails[value co \"zz\"].value","value":"x"}]}`, TypeNoTarget},
		{`[1,2]`, TypeInvalidSyntax},
		{`{"schemas":`, TypeInvalidSyntax},
	} {
		ops, e := parsePatch([]byte(c.body))
		if e == nil {
			d := deepCopy(testUser().Doc)
			e = applyPatch(userType, d, ops)
		}
		if c.scimType == "" {
			if e != nil {
				t.Errorf("%s: %v", c.body, e)
			}
			continue
		}
		if e == nil || e.Status != 400 || e.ScimType != c.scimType {
			t.Errorf("%s: %v; want 400 %s", c.body, e, c.scimType)
		}
	}
}

// TestParseResource: schema checks of POST/PUT bodies.
func TestParseResource(t *testing.T) {
	good := `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
		"UserName":"a@x.example","id":"ignored","meta":{"resourceType":"User"},"password":"p","groups":[{"value":"g"}],
		"emails":[{"value":"a@x.example","primary":"True"}],
		"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"employeeNumber":12}}`
	d, e := parseResource(userType, []byte(good))
	if e != nil {
		t.Fatal(e)
	}
	if asJSON(d) != `{"emails":[{"primary":true,"value":"a@x.example"}],"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"employeeNumber":"12"},"userName":"a@x.example"}` {
		t.Errorf("doc %s", asJSON(d))
	}
	for _, c := range []struct{ body, scimType string }{
		{`{"userName":"a"}`, TypeInvalidSyntax},
		{`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"userName":"a"}`, TypeInvalidSyntax},
		{`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:evil"],"userName":"a"}`, TypeInvalidSyntax},
		{`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"a","favouriteColour":"red"}`, TypeInvalidSyntax},
		{`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"a","name":{"nick":"x"}}`, TypeInvalidSyntax},
		{`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":["a"]}`, TypeInvalidValue},
		{`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"a","emails":{"value":"x"}}`, TypeInvalidValue},
		{`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"a","active":"yes"}`, TypeInvalidValue},
		{`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"a"} {}`, TypeInvalidSyntax},
	} {
		if _, e := parseResource(userType, []byte(c.body)); e == nil || e.ScimType != c.scimType {
			t.Errorf("%s: %v; want %s", c.body, e, c.scimType)
		}
	}
}

// TestSignInEmail: primary, then work, then userName, then the first
// email; the first present candidate decides even when it is not an
// address (never another user's address by fallback).
func TestSignInEmail(t *testing.T) {
	for _, c := range []struct {
		emails   string
		userName string
		want     string
	}{
		{`[{"value":"Home@x.example","type":"home"},{"value":"P@x.example","primary":true}]`, "u@x.example", "p@x.example"},
		{`[{"value":"h@x.example","type":"home"},{"value":"w@x.example","type":"work"}]`, "u@x.example", "w@x.example"},
		{`[{"value":"h@x.example","type":"home"}]`, "U@X.example", "u@x.example"},
		{`[{"value":"h@x.example","type":"home"}]`, "jdoe", "h@x.example"},
		{`[]`, "jdoe", ""},
		{`[{"value":"al\u0130ce@x.example","primary":true}]`, "alice@x.example", ""},
	} {
		var emails []any
		_ = json.Unmarshal([]byte(c.emails), &emails)
		d := doc{"userName": c.userName}
		if len(emails) > 0 {
			d["emails"] = emails
		}
		if got := signInEmail(d, c.userName); got != c.want {
			t.Errorf("%s / %s: %q, want %q", c.emails, c.userName, got, c.want)
		}
	}
}
