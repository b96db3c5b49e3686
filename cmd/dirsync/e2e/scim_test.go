package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

// The SCIM conformance tests drive the real daemon (PostgreSQL as the
// system of record, Redis as the cache) the way identity providers do:
// request shapes from RFC 7643/7644 and from Entra ID's and Okta's
// published provisioning behaviour (docs/scim.md lists the sources).

const (
	acmeSCIMToken   = "acme-scim-token-2f8a71c0d3"
	globexSCIMToken = "globex-scim-token-93b1e4"
)

// scimLab is a `dirsync run` with two SCIM accounts, acme and globex.
type scimLab struct {
	t    testing.TB
	d    *daemon
	base string // http://addr
}

func startSCIMLab(t testing.TB, safeguard string) *scimLab {
	t.Helper()
	return startSCIMLabWith(t, binary, safeguard)
}

// startSCIMLabWith is startSCIMLab with another build of dirsync.
func startSCIMLabWith(t testing.TB, bin, safeguard string) *scimLab {
	t.Helper()
	pg := servertest.StartPostgres(t)
	rs := servertest.StartRedis(t)
	dir := t.TempDir()
	dsn := writeSecret(t, dir, "pg-dsn", pg.CreateDatabase(t))
	admin := writeSecret(t, dir, "admin-token", adminToken)
	acmeTok := writeSecret(t, dir, "acme-scim", acmeSCIMToken)
	cfg, addr := writeConfig(t, dir, fmt.Sprintf(`cache: {backend: redis, redis: {addrs: [%q], key_prefix: scim}}
console: {postgres_dsn_file: %s}
schedule: {full: "@every 1h", incremental: "@every 1h"}
accounts:
  - id: acme
    claimed_domains: [acme.example]
    directory: {type: scim, scim: {token_file: %s}}
    bindings:
      - {group: "Chime Pro", permission: pro}
      - {group: "Chime Basic", permission: basic}
%s
  - id: globex
    claimed_domains: [globex.example]
    directory: {type: scim, scim: {token_env: GLOBEX_SCIM}}
    bindings: [{group: Staff, permission: basic}]
`, rs.Addr, dsn, acmeTok, safeguard))
	writeFile(t, cfg, strings.Replace(mustRead(t, cfg), "api: {listen: ", "api: {admin_token_file: "+admin+", listen: ", 1))
	t.Setenv("GLOBEX_SCIM", globexSCIMToken)
	d := startBinary(t, bin, dir, cfg, addr)
	return &scimLab{t: t, d: d, base: "http://" + addr}
}

// scimAnswer is one HTTP answer.
type scimAnswer struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

// do sends a request with the given bearer token ("" for none); body is
// sent as application/scim+json unless headers say otherwise.
func (l *scimLab) do(token, method, path, body string, headers ...string) scimAnswer {
	l.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, l.base+path, rd)
	if err != nil {
		l.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/scim+json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		l.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := scimAnswer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &a.body)
	}
	return a
}

// acme sends with acme's SCIM token.
func (l *scimLab) acme(method, path, body string, headers ...string) scimAnswer {
	l.t.Helper()
	return l.do(acmeSCIMToken, method, "/scim/v2/acme"+path, body, headers...)
}

// want fails unless the answer has status (and, for errors, the SCIM
// error schema with scimType when given).
func (a scimAnswer) want(t testing.TB, what string, status int, scimType ...string) scimAnswer {
	t.Helper()
	if a.status != status {
		t.Fatalf("%s: HTTP %d %s; want %d", what, a.status, a.raw, status)
	}
	if status >= 400 {
		schemas, _ := a.body["schemas"].([]any)
		if len(schemas) != 1 || schemas[0] != "urn:ietf:params:scim:api:messages:2.0:Error" || a.body["status"] != fmt.Sprint(status) ||
			a.header.Get("Content-Type") != "application/scim+json" {
			t.Fatalf("%s: not a SCIM error: %s %s", what, a.header.Get("Content-Type"), a.raw)
		}
		if len(scimType) > 0 && scimType[0] != "" && a.body["scimType"] != scimType[0] {
			t.Fatalf("%s: scimType %v; want %s (%s)", what, a.body["scimType"], scimType[0], a.raw)
		}
	}
	return a
}

func (a scimAnswer) id() string { s, _ := a.body["id"].(string); return s }

func (a scimAnswer) total() int { n, _ := a.body["totalResults"].(float64); return int(n) }

// oktaUser is the body Okta's SCIM 2.0 client POSTs (and PUTs) for a user.
func oktaUser(login, given string, active bool) string {
	return fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":%q,
		"name":{"givenName":%q,"familyName":"Example"},"emails":[{"primary":true,"value":%q,"type":"work"}],
		"displayName":"%s Example","locale":"en-US","externalId":"00u%s","groups":[],"password":"1mP0ssible!","active":%v}`,
		login, given, login, given, given, active)
}

// TestSCIMConformance: every endpoint, the Okta and Entra ID dialects,
// ETags, filters and paging, bad input and every kind of foreign token,
// against the real daemon; each decision reaches the cache without
// waiting for a schedule (the schedules here are hourly).
func TestSCIMConformance(t *testing.T) {
	// A handful of users: the safeguard (tested below) would hold any
	// single removal.
	l := startSCIMLab(t, "    safeguard: {max_lost_access_percent: 100}")
	d := l.d

	t.Run("discovery", func(t *testing.T) {
		spc := l.acme("GET", "/ServiceProviderConfig", "").want(t, "ServiceProviderConfig", 200)
		if spc.header.Get("Content-Type") != "application/scim+json" {
			t.Errorf("content type %q", spc.header.Get("Content-Type"))
		}
		for _, f := range []string{"patch", "filter", "etag"} {
			if m, _ := spc.body[f].(map[string]any); m["supported"] != true {
				t.Errorf("ServiceProviderConfig %s: %v", f, spc.body[f])
			}
		}
		if m, _ := spc.body["bulk"].(map[string]any); m["supported"] != false {
			t.Errorf("bulk: %v", spc.body["bulk"])
		}
		if rt := l.acme("GET", "/ResourceTypes", "").want(t, "ResourceTypes", 200); rt.total() != 2 ||
			!strings.Contains(rt.raw, `"schema":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"`) {
			t.Errorf("ResourceTypes: %s", rt.raw)
		}
		l.acme("GET", "/ResourceTypes/User", "").want(t, "ResourceTypes/User", 200)
		l.acme("GET", "/ResourceTypes/Robot", "").want(t, "ResourceTypes/Robot", 404)
		if s := l.acme("GET", "/Schemas", "").want(t, "Schemas", 200); s.total() != 3 || !strings.Contains(s.raw, `"name":"userName"`) {
			t.Errorf("Schemas: %.300s", s.raw)
		}
		if s := l.acme("GET", "/Schemas/urn:ietf:params:scim:schemas:core:2.0:Group", "").want(t, "Schemas/Group", 200); s.id() != "urn:ietf:params:scim:schemas:core:2.0:Group" {
			t.Errorf("Schemas/Group: %.300s", s.raw)
		}
	})

	var aliceID, proID, bobID, basicID string
	t.Run("okta", func(t *testing.T) {
		// Okta's import probe, then its existence check before a create.
		l.acme("GET", "/Users?startIndex=1&count=2", "").want(t, "probe", 200)
		if n := l.acme("GET", `/Users?filter=userName%20eq%20%22alice%40acme.example%22&startIndex=1&count=100`, "").want(t, "lookup", 200).total(); n != 0 {
			t.Fatalf("alice exists before she is created: %d", n)
		}
		created := l.acme("POST", "/Users", oktaUser("alice@acme.example", "Alice", true)).want(t, "create alice", 201)
		aliceID = created.id()
		if created.header.Get("Location") != l.base+"/scim/v2/acme/Users/"+aliceID || !strings.HasPrefix(created.header.Get("ETag"), `W/"`) {
			t.Errorf("create headers: %v", created.header)
		}
		meta, _ := created.body["meta"].(map[string]any)
		if meta["version"] != created.header.Get("ETag") || meta["resourceType"] != "User" || strings.Contains(created.raw, "1mP0ssible") {
			t.Errorf("created user: %s", created.raw)
		}
		// Okta creates the pushed group, then PATCHes its members.
		proID = l.acme("POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"Chime Pro","members":[]}`).want(t, "create Chime Pro", 201).id()
		l.acme("PATCH", "/Groups/"+proID, fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
			"Operations":[{"op":"add","path":"members","value":[{"value":%q,"display":"alice@acme.example"}]}]}`, aliceID)).want(t, "add alice", 204)
		d.waitFor("alice@acme.example", 10*time.Second, hasPermission(entitlement.PermissionPro))
		// Profile updates come as PUT of the whole user.
		put := l.acme("PUT", "/Users/"+aliceID, oktaUser("alice@acme.example", "Alicia", true)).want(t, "PUT alice", 200)
		if name, _ := put.body["name"].(map[string]any); name["givenName"] != "Alicia" {
			t.Errorf("PUT: %s", put.raw)
		}
		// Unassignment or deactivation: PATCH replace active false.
		l.acme("PATCH", "/Users/"+aliceID, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":false}}]}`).want(t, "deactivate alice", 200)
		d.waitFor("alice@acme.example", 10*time.Second, isSuspended)
		l.acme("PATCH", "/Users/"+aliceID, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":true}}]}`).want(t, "reactivate alice", 200)
		d.waitFor("alice@acme.example", 10*time.Second, hasPermission(entitlement.PermissionPro))
	})

	t.Run("entra", func(t *testing.T) {
		// userName is the UPN (a domain not claimed); the sign-in email is
		// the work email. The enterprise extension rides along.
		created := l.acme("POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
			"externalId":"bob","userName":"bob@acme.onmicrosoft.example","active":true,"displayName":"Bob",
			"emails":[{"primary":false,"type":"work","value":"Bob@Acme.example"}],
			"meta":{"resourceType":"User"},"name":{"formatted":"Bob B","familyName":"B","givenName":"Bob"},
			"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"employeeNumber":"42","department":"Sales"}}`).want(t, "create bob", 201)
		bobID = created.id()
		schemas, _ := created.body["schemas"].([]any)
		if len(schemas) != 2 {
			t.Errorf("schemas of bob: %v", schemas)
		}
		// Entra checks for the group by displayName, excluding members.
		if n := l.acme("GET", `/Groups?excludedAttributes=members&filter=displayName%20eq%20%22Chime%20Basic%22`, "").want(t, "group lookup", 200).total(); n != 0 {
			t.Fatalf("Chime Basic exists: %d", n)
		}
		// dee keeps Chime Basic from emptying when bob leaves it (a bound
		// group that empties holds the account, like a broken read).
		dee := l.acme("POST", "/Users", oktaUser("dee@acme.example", "Dee", true)).want(t, "create dee", 201).id()
		basicID = l.acme("POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"externalId":"g-basic","displayName":"Chime Basic","members":[{"value":"`+dee+`"}]}`).want(t, "create Chime Basic", 201).id()
		patch := func(path, ops string) scimAnswer {
			return l.acme("PATCH", path, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":`+ops+`}`)
		}
		patch("/Groups/"+basicID, fmt.Sprintf(`[{"op":"Add","path":"members","value":[{"value":%q}]}]`, bobID)).want(t, "Add bob", 204)
		d.waitFor("bob@acme.example", 10*time.Second, hasPermission(entitlement.PermissionBasic))
		// Capitalised ops, booleans as strings.
		patch("/Users/"+bobID, `[{"op":"Replace","path":"active","value":"False"}]`).want(t, "Replace active False", 200)
		d.waitFor("bob@acme.example", 10*time.Second, isSuspended)
		patch("/Users/"+bobID, `[{"op":"Replace","path":"active","value":"True"},{"op":"Replace","path":"emails[type eq \"work\"].value","value":"bob@acme.example"},
			{"op":"Add","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager","value":"`+aliceID+`"}]`).want(t, "Replace active True", 200)
		d.waitFor("bob@acme.example", 10*time.Second, hasPermission(entitlement.PermissionBasic))
		got := l.acme("GET", "/Users/"+bobID, "").want(t, "get bob", 200)
		if !strings.Contains(got.raw, `"manager":{"value":"`+aliceID+`"}`) || !strings.Contains(got.raw, `"department":"Sales"`) {
			t.Errorf("bob after the enterprise PATCH: %s", got.raw)
		}
		// Removal with path members and a value list removes bob only.
		patch("/Groups/"+basicID, fmt.Sprintf(`[{"op":"Remove","path":"members","value":[{"value":%q}]}]`, bobID)).want(t, "Remove bob", 204)
		d.waitFor("bob@acme.example", 10*time.Second, hasReason(entitlement.ReasonNoPermission))
		// Okta-style removal by value filter, after adding him back.
		patch("/Groups/"+basicID, fmt.Sprintf(`[{"op":"add","path":"members","value":[{"value":%q}]}]`, bobID)).want(t, "add bob", 204)
		patch("/Groups/"+basicID, fmt.Sprintf(`[{"op":"remove","path":"members[value eq \"%s\"]"}]`, bobID)).want(t, "remove bob by filter", 204)
		if g := l.acme("GET", "/Groups/"+basicID, "").want(t, "get basic", 200); strings.Contains(g.raw, bobID) {
			t.Errorf("bob still a member: %s", g.raw)
		}
		// Nested groups: Chime Basic inside Chime Pro gives its members pro.
		patch("/Groups/"+basicID, fmt.Sprintf(`[{"op":"add","path":"members","value":[{"value":%q}]}]`, bobID)).want(t, "add bob", 204)
		patch("/Groups/"+proID, fmt.Sprintf(`[{"op":"add","path":"members","value":[{"value":%q,"type":"Group"}]}]`, basicID)).want(t, "nest", 204)
		d.waitFor("bob@acme.example", 10*time.Second, hasPermission(entitlement.PermissionPro))
	})

	t.Run("filters and paging", func(t *testing.T) {
		for _, name := range []string{"carol", "dan", "erin"} {
			l.acme("POST", "/Users", oktaUser(name+"@acme.example", name, true)).want(t, "create "+name, 201)
		}
		for filter, want := range map[string]int{
			`userName eq "ALICE@acme.example"`:                                                 1,
			`externalId eq "bob"`:                                                              1,
			`id eq "` + bobID + `"`:                                                            1,
			`userName sw "carol" or userName sw "dan"`:                                         2,
			`active eq true and emails[type eq "work" and value co "erin"]`:                    1,
			`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "Sales"`: 1,
		} {
			if n := l.acme("GET", "/Users?filter="+urlQuery(filter), "").want(t, filter, 200).total(); n != want {
				t.Errorf("filter %s: %d users; want %d", filter, n, want)
			}
		}
		page := l.acme("GET", "/Users?startIndex=2&count=2", "").want(t, "page", 200)
		if page.total() != 6 || page.body["itemsPerPage"] != float64(2) || page.body["startIndex"] != float64(2) {
			t.Errorf("page: %s", page.raw)
		}
		if g := l.acme("GET", "/Groups?filter="+urlQuery(`displayName eq "chime pro"`)+"&excludedAttributes=members", "").want(t, "group filter", 200); g.total() != 1 || strings.Contains(g.raw, `"members"`) {
			t.Errorf("group by name without members: %s", g.raw)
		}
		if g := l.acme("GET", "/Groups?filter="+urlQuery(`members[value eq "`+basicID+`"]`), "").want(t, "groups containing a group", 200); g.total() != 1 {
			t.Errorf("groups holding Chime Basic: %s", g.raw)
		}
	})

	t.Run("etags", func(t *testing.T) {
		got := l.acme("GET", "/Users/"+aliceID, "").want(t, "get alice", 200)
		tag := got.header.Get("ETag")
		l.acme("GET", "/Users/"+aliceID, "", "If-None-Match", tag).want(t, "If-None-Match", 304)
		l.acme("PATCH", "/Users/"+aliceID, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"title","value":"CEO"}]}`,
			"If-Match", `W/"1"`).want(t, "stale If-Match", 412, "invalidVers")
		next := l.acme("PATCH", "/Users/"+aliceID, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"title","value":"CEO"}]}`,
			"If-Match", tag).want(t, "If-Match", 200)
		if next.header.Get("ETag") == tag {
			t.Errorf("the version did not change: %s", tag)
		}
	})

	t.Run("bad input changes nothing", func(t *testing.T) {
		before := l.acme("GET", "/Users?count=100", "").want(t, "list", 200).raw
		bad := []struct {
			what, method, path, body string
			status                   int
			scimType                 string
		}{
			{"malformed JSON", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"x@acme.example"`, 400, "invalidSyntax"},
			{"not an object", "POST", "/Users", `["x"]`, 400, "invalidSyntax"},
			{"unknown attribute", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"x@acme.example","shoeSize":"44"}`, 400, "invalidSyntax"},
			{"wrong schema", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"userName":"x@acme.example"}`, 400, "invalidSyntax"},
			{"made-up schema", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:example:evil"],"userName":"x@acme.example"}`, 400, "invalidSyntax"},
			{"no schemas", "POST", "/Users", `{"userName":"x@acme.example"}`, 400, "invalidSyntax"},
			{"no userName", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"active":true}`, 400, "invalidValue"},
			{"active not a boolean", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"x@acme.example","active":"sometimes"}`, 400, "invalidValue"},
			{"duplicate userName", "POST", "/Users", oktaUser("Alice@ACME.example", "Evil", true), 409, "uniqueness"},
			{"unknown member", "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"X","members":[{"value":"00000000-0000-4000-8000-000000000000"}]}`, 400, "invalidValue"},
			{"bad patch op", "PATCH", "/Users/" + aliceID, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"delete","path":"title"}]}`, 400, "invalidSyntax"},
			{"bad patch path", "PATCH", "/Users/" + aliceID, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"emails[type eq","value":"x"}]}`, 400, "invalidPath"},
			{"read-only path", "PATCH", "/Users/" + aliceID, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"id","value":"x"}]}`, 400, "mutability"},
			{"remove without path", "PATCH", "/Users/" + aliceID, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"remove"}]}`, 400, "noTarget"},
			{"one bad op of two", "PATCH", "/Users/" + aliceID, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":false},{"op":"replace","path":"nosuch","value":1}]}`, 400, "invalidPath"},
			{"unknown user", "GET", "/Users/00000000-0000-4000-8000-000000000000", "", 404, ""},
			{"not a uuid", "DELETE", "/Users/1;DROP TABLE scim_users", "", 404, ""},
			{"huge body", "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"x@acme.example","title":"` + strings.Repeat("x", 5<<20) + `"}`, 413, ""},
		}
		for _, injection := range []string{
			`userName eq "x" or 1 eq 1`, `userName eq "x\") or (userName pr`, `userName eq "x"; DROP TABLE scim_users; --`,
			`userName eq 'x' OR '1'='1'`, `userName pr) or (1=1`, strings.Repeat("(", 200) + `userName pr` + strings.Repeat(")", 200),
			`password pr`, `nosuch eq "x"`,
		} {
			bad = append(bad, struct {
				what, method, path, body string
				status                   int
				scimType                 string
			}{"filter " + injection, "GET", "/Users?filter=" + urlQuery(injection), "", 400, "invalidFilter"})
		}
		for _, c := range bad {
			l.acme(c.method, c.path, c.body).want(t, c.what, c.status, c.scimType)
		}
		// A body that is not JSON at all (a browser form) is refused
		// before anything reads it.
		l.acme("POST", "/Users", "userName=x", "Content-Type", "application/x-www-form-urlencoded").want(t, "form body", 415)
		if after := l.acme("GET", "/Users?count=100", "").want(t, "list", 200).raw; after != before {
			t.Errorf("bad requests changed the users:\nbefore %s\nafter  %s", before, after)
		}
		d.waitFor("alice@acme.example", 5*time.Second, hasPermission(entitlement.PermissionPro))
	})

	t.Run("tokens", func(t *testing.T) {
		users := "/scim/v2/acme/Users"
		l.do("", "GET", users, "").want(t, "no token", 401)
		if a := l.do("", "GET", users, ""); !strings.Contains(a.header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("401 without WWW-Authenticate: %v", a.header)
		}
		l.do("not-a-token", "GET", users, "").want(t, "unknown token", 401)
		l.do(adminToken, "GET", users, "").want(t, "admin token", 403)
		l.do(globexSCIMToken, "GET", users, "").want(t, "globex's token on acme", 403)
		l.do(acmeSCIMToken, "GET", "/scim/v2/globex/Users", "").want(t, "acme's token on globex", 403)
		l.do(acmeSCIMToken, "POST", "/scim/v2/globex/Users", oktaUser("mallory@globex.example", "M", true)).want(t, "acme's token writing globex", 403)
		l.do(globexSCIMToken, "GET", "/scim/v2/globex/Users", "").want(t, "globex's own token", 200)
		// SCIM tokens open nothing else.
		if a := l.do(acmeSCIMToken, "GET", "/v1/status", ""); a.status != 401 {
			t.Errorf("a SCIM token on /v1/status: %d", a.status)
		}
		if a := l.do(acmeSCIMToken, "POST", "/v1/accounts/acme/scim/tokens", ""); a.status != 401 {
			t.Errorf("a SCIM token issuing tokens: %d", a.status)
		}
		// Issued through the API: works at once, and stops at once.
		issued := l.do(adminToken, "POST", "/v1/accounts/acme/scim/tokens", "")
		secret, _ := issued.body["token"].(string)
		id, _ := issued.body["id"].(string)
		if issued.status != 200 || secret == "" || id == "" {
			t.Fatalf("issue: %d %s", issued.status, issued.raw)
		}
		l.do(secret, "GET", users, "").want(t, "issued token", 200)
		l.do(secret, "GET", "/scim/v2/globex/Users", "").want(t, "issued acme token on globex", 403)
		if list := l.do(adminToken, "GET", "/v1/accounts/acme/scim/tokens", ""); list.status != 200 || strings.Contains(list.raw, secret) || !strings.Contains(list.raw, id) {
			t.Errorf("token list: %d %s", list.status, list.raw)
		}
		if a := l.do(adminToken, "DELETE", "/v1/accounts/acme/scim/tokens/"+id, ""); a.status != 200 {
			t.Fatalf("revoke: %d %s", a.status, a.raw)
		}
		l.do(secret, "GET", users, "").want(t, "revoked token", 401)
		if a := l.do(adminToken, "POST", "/v1/accounts/nope/scim/tokens", ""); a.status != 404 {
			t.Errorf("token for an unknown account: %d", a.status)
		}
		assertNoSecrets(t, "daemon log", d.log(), acmeSCIMToken, globexSCIMToken, secret)
	})

	t.Run("delete", func(t *testing.T) {
		carol := l.acme("GET", "/Users?filter="+urlQuery(`userName eq "carol@acme.example"`), "").want(t, "find carol", 200)
		list, _ := carol.body["Resources"].([]any)
		first, _ := list[0].(map[string]any)
		l.acme("DELETE", "/Users/"+first["id"].(string), "").want(t, "delete carol", 204)
		l.acme("GET", "/Users/"+first["id"].(string), "").want(t, "deleted carol", 404)
		d.waitFor("carol@acme.example", 10*time.Second, func(dec entitlement.Decision) bool { return dec.Reason == entitlement.ReasonUnknownUser })
		// Deleting a bound group that has members holds the account (a
		// lost group, as for a broken read) until a release: bob, pro
		// through Chime Basic nested in Chime Pro, keeps pro meanwhile.
		l.acme("DELETE", "/Groups/"+basicID, "").want(t, "delete Chime Basic", 204)
		l.acme("GET", "/Groups/"+basicID, "").want(t, "deleted Chime Basic", 404)
		time.Sleep(time.Second) // the triggered pass runs (and holds)
		if dec, err := d.decision("bob@acme.example"); err != nil || !dec.Allowed {
			t.Fatalf("bob lost access before a release: %+v %v", dec, err)
		}
		if a := l.do(adminToken, "POST", "/v1/accounts/acme/release", ""); a.status != 200 {
			t.Fatalf("release: %d %s", a.status, a.raw)
		}
		d.waitFor("bob@acme.example", 10*time.Second, hasReason(entitlement.ReasonNoPermission))
	})

	t.Run("acknowledged is durable", func(t *testing.T) {
		zed := l.acme("POST", "/Users", oktaUser("zed@acme.example", "Zed", true)).want(t, "create zed", 201).id()
		l.acme("PATCH", "/Groups/"+proID, fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"add","path":"members","value":[{"value":%q}]}]}`, zed)).want(t, "add zed", 204)
		l.d.proc.Kill() // no shutdown: what was acknowledged must be in PostgreSQL
		l.d = startDaemon(t, l.d.dir, l.d.cfg, l.d.addr)
		d = l.d
		l.acme("GET", "/Users/"+zed, "").want(t, "zed after a crash", 200)
		d.waitFor("zed@acme.example", 20*time.Second, hasPermission(entitlement.PermissionPro))
		d.waitFor("alice@acme.example", 20*time.Second, hasPermission(entitlement.PermissionPro))
	})
}

// urlQuery escapes a query parameter value.
func urlQuery(s string) string {
	var b bytes.Buffer
	for _, c := range []byte(s) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// TestSCIMMassUnassignmentIsHeld: an identity provider misconfigured to
// unassign everyone removes the members of the bound group one request at
// a time; each request triggers a pass of one removal, yet the safeguard
// (its window) holds the account once the removals cross its limit, while
// a suspension pushed meanwhile is published at once; a release publishes
// the rest.
func TestSCIMMassUnassignmentIsHeld(t *testing.T) {
	l := startSCIMLab(t, "    safeguard: {max_lost_access_percent: 20}")
	d := l.d
	var ids []string
	var members []string
	for i := range 30 {
		id := l.acme("POST", "/Users", oktaUser(fmt.Sprintf("u%02d@acme.example", i), fmt.Sprint("U", i), true)).want(t, "create", 201).id()
		ids = append(ids, id)
		members = append(members, fmt.Sprintf(`{"value":%q}`, id))
	}
	pro := l.acme("POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"Chime Pro","members":[`+strings.Join(members, ",")+`]}`).want(t, "create group", 201).id()
	d.waitFor("u29@acme.example", 10*time.Second, hasPermission(entitlement.PermissionPro))
	remove := func(i int) {
		l.acme("PATCH", "/Groups/"+pro, fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Remove","path":"members","value":[{"value":%q}]}]}`, ids[i])).want(t, "remove", 204)
	}
	// 20% of 30: six removals are published, one at a time.
	for i := range 6 {
		remove(i)
		d.waitFor(fmt.Sprintf("u%02d@acme.example", i), 10*time.Second, hasReason(entitlement.ReasonNoPermission))
	}
	for i := 6; i < 20; i++ {
		remove(i)
	}
	// The rest is held; a suspension still goes through.
	l.acme("PATCH", "/Users/"+ids[25], `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":false}}]}`).want(t, "suspend u25", 200)
	d.waitFor("u25@acme.example", 10*time.Second, isSuspended)
	for i := 6; i < 20; i++ {
		if dec, err := d.decision(fmt.Sprintf("u%02d@acme.example", i)); err != nil || !dec.Allowed {
			t.Errorf("u%02d lost access although the safeguard should hold: %+v %v", i, dec, err)
		}
	}
	var st struct {
		Accounts []struct {
			Account     string `json:"account"`
			HoldPending bool   `json:"hold_pending"`
		} `json:"accounts"`
	}
	if a := l.do(adminToken, "GET", "/v1/status", ""); a.status != 200 || json.Unmarshal([]byte(a.raw), &st) != nil {
		t.Fatalf("status: %d %s", a.status, a.raw)
	}
	held := false
	for _, a := range st.Accounts {
		held = held || (a.Account == "acme" && a.HoldPending)
	}
	if !held {
		t.Fatalf("no hold pending for acme: %+v", st)
	}
	if a := l.do(adminToken, "POST", "/v1/accounts/acme/release", ""); a.status != 200 {
		t.Fatalf("release: %d %s", a.status, a.raw)
	}
	d.waitFor("u19@acme.example", 10*time.Second, hasReason(entitlement.ReasonNoPermission))
	d.waitFor("u20@acme.example", 10*time.Second, hasPermission(entitlement.PermissionPro))
}
