package scim

import (
	"strings"
	"testing"
	"time"
)

func testUser() *Resource {
	return &Resource{ID: "2819c223-7f76-453a-919d-413861904646", Kind: "User", Version: 7,
		Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Modified: time.Date(2026, 2, 2, 3, 4, 5, 0, time.UTC),
		Doc: doc{
			"userName":   "Bjensen@Example.com",
			"externalId": "ext-1",
			"active":     true,
			"name":       map[string]any{"givenName": "Barbara", "familyName": "Jensen"},
			"emails": []any{
				map[string]any{"value": "bjensen@example.com", "type": "work", "primary": true},
				map[string]any{"value": "babs@jensen.org", "type": "home"},
			},
			URNEnterpriseUser: map[string]any{"employeeNumber": "701984", "manager": map[string]any{"value": "m-1"}},
		}}
}

// TestFilterMatches: RFC 7644 §3.4.2.2 operators, precedence, case rules,
// value filters and extension paths, on one user.
func TestFilterMatches(t *testing.T) {
	u := testUser()
	for _, c := range []struct {
		filter string
		want   bool
	}{
		{`userName eq "bjensen@example.com"`, true}, // caseExact false
		{`USERNAME EQ "BJENSEN@EXAMPLE.COM"`, true}, // names and operators are case-insensitive
		{`externalId eq "EXT-1"`, false},            // caseExact true
		{`externalId eq "ext-1"`, true},
		{`id eq "2819c223-7f76-453a-919d-413861904646"`, true},
		{`name.givenName sw "Bar" and name.familyName ew "sen"`, true},
		{`name.givenName co "xyz" or active eq true`, true},
		{`not (active eq true)`, false},
		{`active eq false`, false},
		{`active ne false`, true},
		{`emails[type eq "work" and value co "@example.com"]`, true},
		{`emails[type eq "work" and value co "@jensen.org"]`, false},
		{`emails.value eq "babs@jensen.org"`, true},
		{`emails eq "babs@jensen.org"`, true}, // the value sub-attribute
		{`emails.type eq "other"`, false},
		{`title pr`, false},
		{`title eq null`, true},
		{`userName pr and not (title pr)`, true},
		{`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984"`, true},
		{`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "m-1"`, true},
		{`urn:ietf:params:scim:schemas:core:2.0:User:userName sw "bj"`, true},
		{`meta.lastModified gt "2026-01-15T00:00:00Z"`, true},
		{`meta.created gt "2026-01-15T00:00:00Z"`, false},
		{`userName eq "x" or userName eq "y" or (externalId eq "ext-1" and active eq true)`, true},
		{`userName eq "a\"b"`, false},
	} {
		f, err := ParseFilter("User", c.filter)
		if err != nil {
			t.Errorf("%s: %v", c.filter, err)
			continue
		}
		if got := f.Match(u); got != c.want {
			t.Errorf("%s = %v, want %v", c.filter, got, c.want)
		}
	}
}

// TestFilterStringsAreJSON: a string value is a JSON string (RFC 7644
// compValue), escapes decoded — the reason the filter is not parsed with
// scim2/filter-parser v2.3.1, which keeps the backslashes.
func TestFilterStringsAreJSON(t *testing.T) {
	u := testUser()
	u.Doc["userName"] = `o"neil\x`
	f, err := ParseFilter("User", `userName eq "o\"neil\\x"`)
	if err != nil || !f.Match(u) {
		t.Fatalf("escaped string: %v, match %v", err, err == nil && f.Match(u))
	}
	f, err = ParseFilter("User", `userName eq "\u006F\"NEIL\\x"`)
	if err != nil || !f.Match(u) {
		t.Fatalf("unicode escape: %v", err)
	}
}

// TestBadFiltersAreInvalidFilter: malformed, unknown and hostile filters
// are 400 invalidFilter, quickly.
func TestBadFiltersAreInvalidFilter(t *testing.T) {
	for _, filter := range []string{
		``, `userName`, `userName eq`, `userName eq bob`, `userName eq 'bob'`, `userName xx "a"`,
		`(userName eq "a"`, `userName eq "a")`, `userName eq "a" or`, `nosuch eq "a"`, `name.nosuch eq "a"`,
		`emails[nosuch eq "a"]`, `userName[value eq "a"]`, `active gt true`, `name eq "x"`, `password eq "x"`,
		`userName eq "a" or 1 eq 1`, `userName eq "x\") or (userName pr`, `userName eq "a"; DROP TABLE scim_users`,
		`urn:bogus:schema:attr eq "x"`, `userName eq "\ud800"x`, "userName eq \"a\xff\"",
		strings.Repeat("(", 100) + `userName eq "a"` + strings.Repeat(")", 100),
		`userName eq "a"` + strings.Repeat(` or userName eq "a"`, 300),
		strings.Repeat("x", maxFilterLen+1),
	} {
		start := time.Now()
		_, err := ParseFilter("User", filter)
		e := AsError(err)
		if e == nil || e.Status != 400 || e.ScimType != TypeInvalidFilter {
			t.Errorf("%.80q: %v; want 400 invalidFilter", filter, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%.80q took %v", filter, d)
		}
	}
}

// TestFilterHints: the store narrows by index only when every match must
// satisfy one of the terms.
func TestFilterHints(t *testing.T) {
	for _, c := range []struct {
		filter  string
		indexed bool
		terms   int
	}{
		{`userName eq "A@x"`, true, 1},
		{`userName eq "a" or externalId eq "b"`, true, 2},
		{`userName eq "a" and active eq true`, true, 1},
		{`active eq true and externalId eq "b"`, true, 1},
		{`userName eq "a" or active eq true`, false, 0},
		{`not (userName eq "a")`, false, 0},
		{`userName co "a"`, false, 0},
		{`emails[value eq "a"]`, false, 0},
	} {
		f, err := ParseFilter("User", c.filter)
		if err != nil {
			t.Fatal(err)
		}
		terms, ok := f.hints()
		if ok != c.indexed || len(terms) != c.terms {
			t.Errorf("%s: hints %v %v", c.filter, terms, ok)
		}
	}
	f, _ := ParseFilter("User", `userName eq "A@X.example"`)
	if terms, _ := f.hints(); terms[0].value != "a@x.example" || terms[0].column != "user_name_key" {
		t.Errorf("userName term %+v", terms[0])
	}
}
