package oktafake

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// specValidator checks the fake's answers against Okta's published OpenAPI
// spec (the subset in testdata, copied from okta-management-openapi-spec).
type specValidator struct {
	doc    *openapi3.T
	router routers.Router
}

func newSpecValidator(t *testing.T, serverURL string) *specValidator {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile("testdata/okta-management-subset.yaml")
	if err != nil {
		t.Fatalf("load spec: %v", err)
	}
	doc.Servers = openapi3.Servers{{URL: serverURL}}
	// The spec's own ListLogs example fails its schema (null detailEntry,
	// numeric version), so examples are not validated; schemas are.
	router, err := legacy.NewRouter(doc, openapi3.DisableExamplesValidation())
	if err != nil {
		t.Fatalf("spec router: %v", err)
	}
	return &specValidator{doc: doc, router: router}
}

// validate sends a GET for pathAndQuery and checks the response against the
// operation's declared response for its status. It returns the response and
// body for further assertions.
func (v *specValidator) validate(t *testing.T, client *http.Client, base, token, pathAndQuery string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+pathAndQuery, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "SSWS "+token)
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", pathAndQuery, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	route, params, err := v.router.FindRoute(req)
	if err != nil {
		t.Fatalf("GET %s: no spec operation: %v", pathAndQuery, err)
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		},
		Status:  resp.StatusCode,
		Header:  resp.Header,
		Body:    io.NopCloser(bytes.NewReader(body)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		t.Errorf("GET %s (%d): response does not match the spec: %v\nbody: %.600s", pathAndQuery, resp.StatusCode, err, body)
	}
	return resp, body
}

// validateSchema checks a JSON body against a named component schema, for
// answers (such as 401) an operation does not list.
func (v *specValidator) validateSchema(t *testing.T, schema string, body []byte) {
	t.Helper()
	ref := v.doc.Components.Schemas[schema]
	if ref == nil {
		t.Fatalf("schema %s not in spec subset", schema)
	}
	var value any
	if err := json.Unmarshal(body, &value); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, body)
	}
	if err := ref.Value.VisitJSON(value, openapi3.MultiErrors()); err != nil {
		t.Errorf("body does not match schema %s: %v\nbody: %s", schema, err, body)
	}
}

// populate creates an org with every status and group type.
func populate(s *Server) (groups map[string]string, users []string) {
	groups = map[string]string{
		GroupOkta:    s.AddGroup("Engineering", GroupOkta),
		GroupApp:     s.AddGroup("AD Sales", GroupApp),
		GroupBuiltIn: s.AddGroup("Everyone", GroupBuiltIn),
	}
	for i, st := range []string{StatusStaged, StatusProvisioned, StatusActive, StatusRecovery,
		StatusPasswordExpired, StatusLockedOut, StatusSuspended, StatusDeprovisioned} {
		email := strings.ToLower(st) + "@acme.example"
		if i == 0 {
			email = "" // null profile.email
		}
		id := s.AddUser(UserSpec{Login: strings.ToLower(st) + "@acme.example", Email: email, FirstName: "U", LastName: st, Status: st})
		users = append(users, id)
		s.AddMember(groups[GroupBuiltIn], id)
		if i%2 == 0 {
			s.AddMember(groups[GroupOkta], id)
		} else {
			s.AddMember(groups[GroupApp], id)
		}
	}
	s.SetStatus(users[2], StatusSuspended)
	s.SetStatus(users[2], StatusActive)
	return groups, users
}

func TestResponsesMatchOktaSpec(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		name := "http"
		if useTLS {
			name = "https"
		}
		t.Run(name, func(t *testing.T) {
			s := New(Options{TLS: useTLS, RateLimit: 1000})
			defer s.Close()
			groups, users := populate(s)
			v := newSpecValidator(t, s.URL)
			c := s.Client()
			tok := s.Token()
			since := url.QueryEscape(s.Now().Add(-time1h).Format(oktaTime))
			paths := []string{
				"/api/v1/users",
				"/api/v1/users?limit=3",
				"/api/v1/users?limit=3&after=" + users[2],
				"/api/v1/users?filter=" + url.QueryEscape(`status eq "SUSPENDED" or status eq "DEPROVISIONED"`),
				"/api/v1/users?filter=" + url.QueryEscape(`lastUpdated gt "2000-01-01T00:00:00.000Z"`),
				"/api/v1/users?search=" + url.QueryEscape(`profile.email sw "locked"`),
				"/api/v1/users?q=U",
				"/api/v1/users/" + users[0],
				"/api/v1/users/active@acme.example",
				"/api/v1/groups",
				"/api/v1/groups?limit=1",
				"/api/v1/groups?filter=" + url.QueryEscape(`type eq "APP_GROUP"`),
				"/api/v1/groups?search=" + url.QueryEscape(`profile.name eq "Everyone"`),
				"/api/v1/groups?q=Eng",
				"/api/v1/groups/" + groups[GroupOkta],
				"/api/v1/groups/" + groups[GroupApp],
				"/api/v1/groups/" + groups[GroupBuiltIn],
				"/api/v1/groups/" + groups[GroupBuiltIn] + "/users?limit=3",
				"/api/v1/groups/" + groups[GroupOkta] + "/users",
				"/api/v1/logs?sortOrder=ASCENDING&since=" + since,
				"/api/v1/logs?limit=2&filter=" + url.QueryEscape(`eventType eq "group.user_membership.add"`),
			}
			for _, p := range paths {
				resp, _ := v.validate(t, c, s.URL, tok, p)
				if resp.StatusCode != http.StatusOK {
					t.Errorf("GET %s: status %d, want 200", p, resp.StatusCode)
				}
			}
			// Error answers the operations declare.
			resp, body := v.validate(t, c, s.URL, tok, "/api/v1/users/00unknown00000000000")
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("unknown user: status %d, want 404", resp.StatusCode)
			}
			v.validateSchema(t, "Error", body)
			resp, _ = v.validate(t, c, s.URL, tok, "/api/v1/groups/00gunknown0000000000")
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("unknown group: status %d, want 404", resp.StatusCode)
			}
			// listUsers declares no 400; its body is still an Error.
			resp, body = v.getRaw(t, c, s.URL+"/api/v1/users?filter="+url.QueryEscape(`profile.city eq "x"`), "SSWS "+tok)
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("unsupported filter: status %d, want 400", resp.StatusCode)
			}
			v.validateSchema(t, "Error", body)
			s.Inject(Fault{Kind: TooManyRequests, Times: 1})
			resp, _ = v.validate(t, c, s.URL, tok, "/api/v1/users")
			if resp.StatusCode != http.StatusTooManyRequests {
				t.Errorf("injected 429: status %d", resp.StatusCode)
			}
			// A wrong token: 401 E0000011, an Error object.
			resp, body = v.getRaw(t, c, s.URL+"/api/v1/users", "SSWS wrong")
			if resp.StatusCode != http.StatusUnauthorized || !bytes.Contains(body, []byte(`"E0000011"`)) {
				t.Errorf("wrong token: %d %s", resp.StatusCode, body)
			}
			v.validateSchema(t, "Error", body)
		})
	}
}

const time1h = 3600 * 1e9

func (v *specValidator) getRaw(t *testing.T, c *http.Client, u, auth string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Authorization", auth)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}
