package oktafake

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

func TestSpecValidatorRejectsWrongShapes(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	v := newSpecValidator(t, s.URL)
	for schema, body := range map[string]string{
		"Group": `{"id":"00g1","type":"SOME_GROUP","profile":{"name":"x"}}`,
		"User":  `{"id":"00u1","status":"ACTIVE","created":"yesterday"}`,
	} {
		var value any
		if err := json.Unmarshal([]byte(body), &value); err != nil {
			t.Fatal(err)
		}
		if err := v.doc.Components.Schemas[schema].Value.VisitJSON(value); err == nil {
			t.Errorf("schema %s accepted %s", schema, body)
		}
	}
}

func get(t *testing.T, s *Server, pathAndQuery string) (*http.Response, []map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.URL+pathAndQuery, nil)
	req.Header.Set("Authorization", "SSWS "+s.Token())
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var items []map[string]any
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&items); err != nil {
			t.Fatalf("GET %s: %v", pathAndQuery, err)
		}
	}
	return resp, items
}

func TestPaginationLinksAndHeaders(t *testing.T) {
	s := New(Options{RateLimit: 50})
	defer s.Close()
	groups, users := populate(s)

	resp, page := get(t, s, "/api/v1/groups/"+groups[GroupBuiltIn]+"/users?limit=3")
	links := resp.Header.Values("Link")
	if len(page) != 3 || len(links) != 2 || !strings.HasSuffix(links[0], `rel="self"`) || !strings.HasSuffix(links[1], `rel="next"`) {
		t.Fatalf("first page: %d items, links %q; want 3 items and separate self and next lines", len(page), links)
	}
	if !strings.Contains(links[1], "after="+users[2]) {
		t.Errorf("next link %q does not continue after the last returned id %s", links[1], users[2])
	}
	seen := map[string]bool{}
	for _, it := range page {
		seen[it["id"].(string)] = true
	}
	for pages := 1; ; pages++ {
		nl := resp.Header.Values("Link")
		if len(nl) < 2 {
			break
		}
		u, err := url.Parse(strings.TrimSuffix(strings.TrimPrefix(strings.Split(nl[1], ";")[0], "<"), ">"))
		if err != nil {
			t.Fatal(err)
		}
		resp, page = get(t, s, u.RequestURI())
		for _, it := range page {
			seen[it["id"].(string)] = true
		}
		if pages > 10 {
			t.Fatal("pagination does not end")
		}
	}
	if len(seen) != len(users) {
		t.Errorf("paging saw %d distinct members, want %d", len(seen), len(users))
	}

	for _, h := range []string{"Date", "X-Rate-Limit-Limit", "X-Rate-Limit-Remaining", "X-Rate-Limit-Reset", "X-Okta-Request-Id"} {
		if resp.Header.Get(h) == "" {
			t.Errorf("header %s missing", h)
		}
	}
	if resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("Content-Type %q", resp.Header.Get("Content-Type"))
	}
	if r, _ := strconv.Atoi(resp.Header.Get("X-Rate-Limit-Remaining")); r >= 50 {
		t.Errorf("remaining %d did not drop", r)
	}

	// q= answers without a Link header; the plain users list omits
	// DEPROVISIONED users while a filter includes them.
	if resp, _ := get(t, s, "/api/v1/groups?q=Eng"); len(resp.Header.Values("Link")) != 0 {
		t.Errorf("q= answered Link %q", resp.Header.Values("Link"))
	}
	_, all := get(t, s, "/api/v1/users")
	_, deprov := get(t, s, "/api/v1/users?filter="+url.QueryEscape(`status eq "DEPROVISIONED"`))
	if len(all) != len(users)-1 || len(deprov) != 1 {
		t.Errorf("plain list %d users (want %d), DEPROVISIONED filter %d (want 1)", len(all), len(users)-1, len(deprov))
	}
}

func TestRateLimitBudgetAndFaults(t *testing.T) {
	s := New(Options{RateLimit: 3, RateWindow: 3600e9})
	defer s.Close()
	s.AddUser(UserSpec{Login: "a@acme.example"})
	codes := []int{}
	for range 4 {
		resp, _ := get(t, s, "/api/v1/users")
		codes = append(codes, resp.StatusCode)
	}
	if codes[2] != 200 || codes[3] != 429 {
		t.Errorf("codes %v: want the 4th request of a 3-request window to get 429", codes)
	}
	if c := s.Counters(); c.RateLimited != 1 || c.MaxWindowUsed != 4 {
		t.Errorf("counters %+v", c)
	}

	s2 := New(Options{})
	defer s2.Close()
	s2.Inject(Fault{Kind: TooManyRequests, Every: 2})
	s2.Inject(Fault{Kind: ServerError, Every: 1, Times: 1, PathPrefix: "/api/v1/groups"})
	var got []int
	for range 4 {
		resp, _ := get(t, s2, "/api/v1/users")
		got = append(got, resp.StatusCode)
	}
	resp, _ := get(t, s2, "/api/v1/groups")
	got = append(got, resp.StatusCode)
	if want := []int{200, 429, 200, 429, 500}; !equalInts(got, want) {
		t.Errorf("codes %v, want %v", got, want)
	}
	resp, _ = get(t, s2, "/api/v1/users?filter="+url.QueryEscape(`status eq "ACTIVE"`)) // 5th users-matching request: 429 again
	if resp.StatusCode != 429 {
		t.Errorf("every-2 fault: status %d", resp.StatusCode)
	}
	if c := s2.Counters(); c.Injected["429"] != 3 || c.Injected["500"] != 1 {
		t.Errorf("injected %v", c.Injected)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestSystemLogPolling(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	g := s.AddGroup("Engineering", GroupOkta)
	u := s.AddUser(UserSpec{Login: "a@acme.example", Email: "a@acme.example"})
	since := url.QueryEscape(s.Now().Add(-60e9).Format(oktaTime))
	filter := url.QueryEscape(`eventType eq "user.lifecycle.suspend" or eventType eq "group.user_membership.add"`)
	resp, events := get(t, s, "/api/v1/logs?sortOrder=ASCENDING&since="+since+"&filter="+filter)
	if len(events) != 0 || len(resp.Header.Values("Link")) != 2 {
		t.Fatalf("before changes: %d events, links %q; want 0 events and a next link", len(events), resp.Header.Values("Link"))
	}
	next := resp.Header.Values("Link")[1]
	s.AddMember(g, u)
	s.SetStatus(u, StatusSuspended)
	nu, _ := url.Parse(strings.TrimSuffix(strings.TrimPrefix(strings.Split(next, ";")[0], "<"), ">"))
	resp, events = get(t, s, nu.RequestURI())
	if len(events) != 2 || events[0]["eventType"] != "group.user_membership.add" || events[1]["eventType"] != "user.lifecycle.suspend" {
		t.Fatalf("after changes: %v", events)
	}
	targets := events[0]["target"].([]any)
	if targets[0].(map[string]any)["id"] != u || targets[1].(map[string]any)["id"] != g {
		t.Errorf("membership targets %v", targets)
	}
	if len(resp.Header.Values("Link")) != 2 {
		t.Errorf("polling page without next link")
	}
}
