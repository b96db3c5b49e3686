package docs_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

func loadSpec(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromFile("openapi.yaml")
	if err != nil {
		t.Fatalf("load docs/openapi.yaml: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("docs/openapi.yaml is not a valid OpenAPI 3 document: %v", err)
	}
	return doc
}

// TestOpenAPIDescribesEveryRoute fails when a registered route is not in
// docs/openapi.yaml, when the spec describes a route the API does not
// register, or when a route's scope differs from its x-dirsync-scope.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	doc := loadSpec(t)
	type op struct{ method, path string }
	described := map[op]string{}
	for path, item := range doc.Paths.Map() {
		for method, o := range item.Operations() {
			scope, _ := o.Extensions["x-dirsync-scope"].(string)
			described[op{method, path}] = scope
		}
	}
	routes := fullAPI(t).Routes()
	if len(routes) < 20 {
		t.Fatalf("the API registers only %d routes: the test does not build the whole API", len(routes))
	}
	registered := map[op]bool{}
	for _, r := range routes {
		k := op{r.Method, r.Path}
		registered[k] = true
		scope, ok := described[k]
		switch {
		case !ok:
			t.Errorf("route %s %s is not described in docs/openapi.yaml", r.Method, r.Path)
		case scope != r.Scope.String():
			t.Errorf("docs/openapi.yaml: %s %s has x-dirsync-scope %q; the route's scope is %q", r.Method, r.Path, scope, r.Scope)
		}
	}
	for k := range described {
		if !registered[k] {
			t.Errorf("docs/openapi.yaml describes %s %s, which the API does not register", k.method, k.path)
		}
	}
}

// TestAnswersMatchOpenAPI sends real requests to the whole API and checks
// each answer (status, content type, JSON body) against the operation's
// declared response.
func TestAnswersMatchOpenAPI(t *testing.T) {
	doc := loadSpec(t)
	srv := httptest.NewServer(fullAPI(t))
	defer srv.Close()
	doc.Servers = openapi3.Servers{{URL: srv.URL}}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	admin := map[string]string{"Authorization": "Bearer " + testAdminToken}
	jsonAdmin := map[string]string{"Authorization": "Bearer " + testAdminToken, "Content-Type": "application/json"}
	scimAuth := map[string]string{"Authorization": "Bearer " + testSCIMToken}
	scimJSON := map[string]string{"Authorization": "Bearer " + testSCIMToken, "Content-Type": "application/scim+json"}
	for _, c := range []struct {
		method, path, body string
		headers            map[string]string
		want               int
	}{
		{"GET", "/healthz", "", nil, 200},
		{"GET", "/readyz", "", nil, 503},
		{"GET", "/v1/access/alice@acme.example", "", nil, 200},
		{"GET", "/v1/access/nobody@acme.example", "", nil, 200},
		{"GET", "/v1/access/alice@acme.example/explain", "", admin, 200},
		{"GET", "/v1/access/alice@acme.example/explain", "", nil, 401},
		{"GET", "/v1/status", "", admin, 200},
		{"POST", "/v1/sync?account=acme&dry_run=true", "", admin, 200},
		{"POST", "/v1/sync?account=nope", "", admin, 404},
		{"POST", "/v1/sync?mode=sideways", "", admin, 400},
		{"POST", "/v1/sync?account=acme", "x=1", map[string]string{"Authorization": "Bearer " + testAdminToken, "Content-Type": "text/plain"}, 415},
		{"POST", "/v1/sync", "", map[string]string{"Authorization": "Bearer " + testAdminToken, "Origin": "http://evil.example"}, 403},
		{"POST", "/v1/accounts/acme/release", "", admin, 409},
		{"POST", "/v1/reload", "", admin, 200},
		{"GET", "/v1/hooks/okta", "", map[string]string{"Authorization": "hook-secret", "X-Okta-Verification-Challenge": "c"}, 200},
		{"GET", "/v1/hooks/okta", "", map[string]string{"X-Okta-Verification-Challenge": "c"}, 401},
		{"POST", "/v1/hooks/okta", `{"data":{"events":[]}}`, map[string]string{"Authorization": "hook-secret", "Content-Type": "application/json"}, 200},
		{"POST", "/v1/accounts/team/invitations", `{"emails":"a@x.example; b@y.example","permission":"pro"}`, jsonAdmin, 200},
		{"POST", "/v1/accounts/team/invitations", `{"emails":`, jsonAdmin, 400},
		{"POST", "/v1/accounts/team/invitations/a@x.example/accept", "", admin, 200},
		{"PUT", "/v1/accounts/team/users/a@x.example/permission", `{"permission":"basic"}`, jsonAdmin, 200},
		{"POST", "/v1/accounts/team/bulk/suspend", `{"emails":["a@x.example"]}`, jsonAdmin, 200},
		{"DELETE", "/v1/accounts/team/users/a@x.example", "", admin, 200},
		{"GET", "/v1/accounts/team/users?limit=10", "", admin, 200},
		{"GET", "/v1/accounts/team/audit", "", admin, 200},
		{"GET", "/scim/v2/acme/ServiceProviderConfig", "", scimAuth, 200},
		{"GET", "/scim/v2/acme/ResourceTypes", "", scimAuth, 200},
		{"GET", "/scim/v2/acme/ResourceTypes/Group", "", scimAuth, 200},
		{"GET", "/scim/v2/acme/Schemas", "", scimAuth, 200},
		{"GET", "/scim/v2/acme/Schemas/urn:ietf:params:scim:schemas:core:2.0:User", "", scimAuth, 200},
		{"GET", "/scim/v2/acme/Users?filter=userName%20eq%20%22alice%40acme.example%22&count=10", "", scimAuth, 200},
		{"GET", "/scim/v2/acme/Users?filter=userName%20eq", "", scimAuth, 400},
		{"GET", "/scim/v2/acme/Users", "", nil, 401},
		{"GET", "/scim/v2/acme/Users", "", admin, 403},
		{"GET", "/scim/v2/other/Users", "", scimAuth, 403},
		{"POST", "/scim/v2/acme/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"alice@acme.example"}`, scimJSON, 201},
		{"POST", "/scim/v2/acme/Users", "userName=x", map[string]string{"Authorization": "Bearer " + testSCIMToken, "Content-Type": "text/plain"}, 415},
		{"GET", "/scim/v2/acme/Users/2819c223-7f76-453a-919d-413861904646", "", scimAuth, 200},
		{"GET", "/scim/v2/acme/Users/nope", "", scimAuth, 404},
		{"PUT", "/scim/v2/acme/Users/2819c223-7f76-453a-919d-413861904646", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"alice@acme.example"}`, scimJSON, 200},
		{"PATCH", "/scim/v2/acme/Users/2819c223-7f76-453a-919d-413861904646", `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":"False"}]}`, scimJSON, 200},
		{"PATCH", "/scim/v2/acme/Groups/2819c223-7f76-453a-919d-413861904646", `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"add","path":"members","value":[]}]}`, scimJSON, 204},
		{"DELETE", "/scim/v2/acme/Users/2819c223-7f76-453a-919d-413861904646", "", scimAuth, 204},
		{"POST", "/v1/accounts/acme/scim/tokens", "", admin, 200},
		{"POST", "/v1/accounts/acme/scim/tokens", "", scimAuth, 401},
		{"GET", "/v1/accounts/acme/scim/tokens", "", admin, 200},
		{"DELETE", "/v1/accounts/acme/scim/tokens/t1", "", admin, 200},
		{"GET", "/v1/accounts/team/scim/tokens", "", admin, 404},
	} {
		var rd io.Reader
		if c.body != "" {
			rd = strings.NewReader(c.body)
		}
		req, err := http.NewRequest(c.method, srv.URL+c.path, rd)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range c.headers {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s %s: HTTP %d %s; want %d", c.method, c.path, resp.StatusCode, body, c.want)
			continue
		}
		validateAnswer(t, router, req, resp, body)
	}
}

func validateAnswer(t *testing.T, router routers.Router, req *http.Request, resp *http.Response, body []byte) {
	t.Helper()
	route, params, err := router.FindRoute(req)
	if err != nil {
		t.Errorf("%s %s: no operation in docs/openapi.yaml: %v", req.Method, req.URL, err)
		return
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
		t.Errorf("%s %s (%d): the answer does not match docs/openapi.yaml: %v\nbody: %.600s", req.Method, req.URL.Path, resp.StatusCode, err, body)
	}
}
