package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

// otlpReceiver is an OTLP/HTTP trace receiver (protobuf, POST /v1/traces,
// as the OpenTelemetry protocol specifies): it keeps every span it is sent
// with its resource's service.name, and the Authorization header.
type otlpReceiver struct {
	mu      sync.Mutex
	spans   []receivedSpan
	auth    []string
	badPath []string
}

type receivedSpan struct {
	service string
	span    *tracepb.Span
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
		o.badPath = append(o.badPath, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type"))
		http.Error(w, "not an OTLP/HTTP protobuf trace export", http.StatusBadRequest)
		return
	}
	body, err := io.ReadAll(r.Body)
	var req coltracepb.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(body, &req)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	o.auth = append(o.auth, r.Header.Get("Authorization"))
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				o.spans = append(o.spans, receivedSpan{service, s})
			}
		}
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Write(out) //nolint:errcheck
}

// passTrace finds a complete pass of account: its root span and its read,
// map and publish children, all in one trace. It returns a description of
// what is missing when there is none.
func (o *otlpReceiver) passTrace(account string) (map[string]*tracepb.Span, string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	missing := fmt.Sprintf("no dirsync.pass span for %s among %d spans", account, len(o.spans))
	for _, root := range o.spans {
		if root.span.GetName() != "dirsync.pass" || attr(root.span, "dirsync.account") != account {
			continue
		}
		if root.service != "dirsync" {
			return nil, "service.name " + root.service
		}
		got := map[string]*tracepb.Span{"dirsync.pass": root.span}
		for _, c := range o.spans {
			if bytes.Equal(c.span.GetTraceId(), root.span.GetTraceId()) && bytes.Equal(c.span.GetParentSpanId(), root.span.GetSpanId()) {
				got[c.span.GetName()] = c.span
			}
		}
		if got["read"] != nil && got["map"] != nil && got["publish"] != nil {
			return got, ""
		}
		missing = fmt.Sprintf("pass of %s has children %v", account, keys(got))
	}
	return nil, missing
}

func attr(s *tracepb.Span, key string) string {
	for _, kv := range s.GetAttributes() {
		if kv.GetKey() == key {
			v := kv.GetValue()
			if v.GetStringValue() != "" {
				return v.GetStringValue()
			}
			return fmt.Sprint(v.GetIntValue())
		}
	}
	return ""
}

func keys(m map[string]*tracepb.Span) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestPassTraces: with telemetry.otlp_endpoint set, a one-off `dirsync
// sync` and the daemon's scheduled passes export a trace per pass (a
// dirsync.pass span with read, map and publish children, carrying the
// account, the decision count and the published changes) to a real OTLP/HTTP
// endpoint, with the configured headers; the one-off sync flushes its
// spans before it exits. A receiver that refuses exports never fails a pass.
func TestPassTraces(t *testing.T) {
	rs := servertest.StartRedis(t)
	recv := &otlpReceiver{}
	collector := httptest.NewServer(recv)
	defer collector.Close()

	dir := t.TempDir()
	ldif := `dn: CN=Staff,OU=G,DC=lab,DC=example
objectClass: group
cn: Staff
member: CN=ann,OU=U,DC=lab,DC=example

dn: CN=ann,OU=U,DC=lab,DC=example
objectClass: user
objectGUID:: AAAAAAAAAAAAAAAAAAAAAQ==
cn: ann
mail: ann@lab.example
userAccountControl: 512
`
	writeFile(t, filepath.Join(dir, "lab.ldif"), ldif)
	headers := writeSecret(t, dir, "otlp-headers", "Authorization: Bearer trace-secret-1")
	body := func(endpoint string) string {
		return fmt.Sprintf(`cache: {backend: redis, redis: {addrs: [%q], key_prefix: e2e-traces}}
schedule: {full: "@every 1h", incremental: "@every 1s"}
telemetry: {otlp_endpoint: %q, otlp_headers_file: %s}
accounts:
  - id: lab
    claimed_domains: [lab.example]
    directory: {type: ldif, ldif: {path: lab.ldif}}
    bindings: [{group: "CN=Staff,OU=G,DC=lab,DC=example", permission: pro}]
`, rs.Addr, endpoint, headers)
	}
	cfg, addr := writeConfig(t, dir, body(collector.URL))

	// A one-off sync exports its pass before exiting (no batch delay).
	if code, out, errOut := cli(t, "sync", "--config", cfg); code != 0 {
		t.Fatalf("sync: exit %d\n%s\n%s", code, out, errOut)
	}
	spans, missing := recv.passTrace("lab")
	if spans == nil {
		t.Fatalf("after dirsync sync: %s (bad requests: %v)", missing, recv.badPath)
	}
	if got := attr(spans["map"], "dirsync.decisions"); got != "1" {
		t.Errorf("map span dirsync.decisions = %q, want 1", got)
	}
	if got := attr(spans["dirsync.pass"], "dirsync.changes.published"); got != "1" {
		t.Errorf("pass span dirsync.changes.published = %q, want 1 (ann's first decision)", got)
	}
	if got := attr(spans["dirsync.pass"], "dirsync.result"); got != "published" {
		t.Errorf("pass span dirsync.result = %q, want published", got)
	}
	recv.mu.Lock()
	for _, a := range recv.auth {
		if a != "Bearer trace-secret-1" {
			t.Errorf("export sent Authorization %q, want the configured header", a)
		}
	}
	recv.spans = nil
	recv.mu.Unlock()

	// The daemon exports its scheduled passes in batches.
	d := startDaemon(t, dir, cfg, addr)
	d.waitFor("ann@lab.example", 30*time.Second, func(x entitlement.Decision) bool { return x.Permission == entitlement.PermissionPro })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if spans, missing = recv.passTrace("lab"); spans != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon: %s", missing)
		}
		time.Sleep(200 * time.Millisecond)
	}
	assertNoSecrets(t, "daemon log", d.log(), "trace-secret-1")

	// An endpoint that refuses every export: passes still publish.
	collector.Close()
	writeFile(t, filepath.Join(dir, "lab.ldif"), strings.Replace(ldif, "userAccountControl: 512", "userAccountControl: 514", 1))
	d.waitFor("ann@lab.example", 30*time.Second, isSuspended)
}
