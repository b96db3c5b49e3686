package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTelemetryValidation(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("headers", "# vendor key\nx-api-key: k1\n")
	write("empty", " \n")
	write("novalue", "x-api-key:\n")
	base := "cache: {backend: memory}\naccounts: [{id: a, claimed_domains: [a.example], directory: {type: ldif, ldif: {path: d.ldif}}, bindings: [{group: g, permission: pro}]}]\n"
	write("d.ldif", "")

	cfg, err := parse([]byte(base), dir, "off", nil)
	if err != nil {
		t.Fatalf("no telemetry: %v", err)
	}
	if cfg.Telemetry.Enabled() || cfg.Telemetry.SampleRatio != 1 || cfg.Telemetry.ServiceName != "dirsync" {
		t.Errorf("defaults: %+v (tracing must be off unless an endpoint is set)", cfg.Telemetry)
	}
	cfg, err = parse([]byte(base+"telemetry: {otlp_endpoint: \"http://collector:4318\", otlp_headers_file: headers, sample_ratio: 0.25}\n"), dir, "on", nil)
	if err != nil {
		t.Fatalf("good telemetry: %v", err)
	}
	if !cfg.Telemetry.Enabled() || !filepath.IsAbs(cfg.Telemetry.OTLPHeadersFile) || cfg.Telemetry.SampleRatio != 0.25 {
		t.Errorf("parsed: %+v", cfg.Telemetry)
	}

	for _, c := range []struct{ name, section, path, want string }{
		{"not a URL", "{otlp_endpoint: \"collector:4318\"}", "telemetry.otlp_endpoint", "not an http(s) URL"},
		{"grpc scheme", "{otlp_endpoint: \"grpc://collector:4317\"}", "telemetry.otlp_endpoint", "OTLP/HTTP"},
		{"empty headers", "{otlp_endpoint: \"http://c:4318\", otlp_headers_file: empty}", "telemetry.otlp_headers_file", "no headers"},
		{"empty header value", "{otlp_endpoint: \"http://c:4318\", otlp_headers_file: novalue}", "telemetry.otlp_headers_file", "empty value"},
		{"missing headers", "{otlp_endpoint: \"http://c:4318\", otlp_headers_file: nope}", "telemetry.otlp_headers_file", "cannot read"},
		{"headers without endpoint", "{otlp_headers_file: headers}", "telemetry.otlp_headers_file", "otlp_endpoint is not"},
		{"ratio", "{otlp_endpoint: \"http://c:4318\", sample_ratio: 1.5}", "telemetry.sample_ratio", "outside (0, 1]"},
		{"unknown field", "{otlp_endpoint: \"http://c:4318\", endpoint: x}", "", "endpoint"},
	} {
		_, err := parse([]byte(base+"telemetry: "+c.section+"\n"), dir, c.name, nil)
		if err == nil {
			t.Errorf("%s: accepted", c.name)
			continue
		}
		if c.path == "" {
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: %v lacks %q", c.name, err, c.want)
			}
			continue
		}
		if got := problemsOf(t, err)[c.path]; !strings.Contains(got, c.want) {
			t.Errorf("%s: problem at %s = %q, want it to say %q (all: %v)", c.name, c.path, got, c.want, err)
		}
	}
}
