package engine

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// TestPassSpans: a pass is one trace: a dirsync.pass root with read, map
// and publish children carrying the pass's figures; a failed read marks the
// read and the pass spans failed and makes no map or publish span.
func TestPassSpans(t *testing.T) {
	e, src, _, _ := setup(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background()) //nolint:errcheck
	e.SetTracer(tp.Tracer("test"))

	src.set(org(3, nil), nil)
	if _, err := e.Run(context.Background(), "acme", Options{Mode: ModeFull}); err != nil {
		t.Fatal(err)
	}
	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		byName[s.Name()] = s
	}
	root := byName[SpanPass]
	if root == nil || len(rec.Ended()) != 4 {
		t.Fatalf("spans %v; want %s with 3 children", names(rec.Ended()), SpanPass)
	}
	for _, child := range []string{SpanRead, SpanMap, SpanPublish} {
		s := byName[child]
		if s == nil || s.Parent().SpanID() != root.SpanContext().SpanID() || s.SpanContext().TraceID() != root.SpanContext().TraceID() {
			t.Errorf("%s is not a child of the pass span", child)
		}
	}
	want := map[string]string{"dirsync.account": "acme", "dirsync.mode": "full", "dirsync.result": "published", "dirsync.changes.published": "3"}
	for _, kv := range root.Attributes() {
		if w, ok := want[string(kv.Key)]; ok && kv.Value.String() != w {
			t.Errorf("pass attribute %s = %s, want %s", kv.Key, kv.Value.String(), w)
		}
		delete(want, string(kv.Key))
	}
	if len(want) > 0 {
		t.Errorf("pass span lacks %v", want)
	}

	rec2 := tracetest.NewSpanRecorder()
	tp.RegisterSpanProcessor(rec2)
	src.set(nil, errors.New("ldap: connection reset"))
	if _, err := e.Run(context.Background(), "acme", Options{Mode: ModeFull}); err == nil {
		t.Fatal("a failed read passed")
	}
	got := map[string]codes.Code{}
	for _, s := range rec2.Ended() {
		got[s.Name()] = s.Status().Code
	}
	if len(got) != 2 || got[SpanPass] != codes.Error || got[SpanRead] != codes.Error {
		t.Errorf("failed read spans %v; want pass and read, both failed", got)
	}
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name())
	}
	return out
}
