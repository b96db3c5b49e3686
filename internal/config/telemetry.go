package config

import (
	"fmt"
	"net/url"
	"os"
	"strings"
)

// Telemetry configures OpenTelemetry traces of sync passes. Off unless
// OTLPEndpoint is set.
type Telemetry struct {
	// OTLPEndpoint is an OTLP/HTTP (protobuf) receiver, e.g.
	// http://otel-collector:4318: each pass is exported as a trace (a
	// dirsync.pass span with read, map and publish children) to
	// <endpoint>/v1/traces, or to the URL as given when it has a path.
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// OTLPHeadersFile names a file of "Name: value" lines sent with every
	// export (e.g. a vendor's API key). Optional; when set it must hold at
	// least one header.
	OTLPHeadersFile string `yaml:"otlp_headers_file"`
	// SampleRatio is the fraction of passes traced, in (0, 1]. Default 1.
	SampleRatio float64 `yaml:"sample_ratio"`
	// ServiceName is the service.name resource attribute. Default dirsync.
	ServiceName string `yaml:"service_name"`
}

// Enabled reports whether traces are exported.
func (t *Telemetry) Enabled() bool { return t.OTLPEndpoint != "" }

// Defaults of telemetry.
const (
	DefaultTelemetrySampleRatio = 1.0
	DefaultTelemetryServiceName = "dirsync"
)

func (t *Telemetry) applyDefaults(c *Config) {
	t.OTLPHeadersFile = c.path(t.OTLPHeadersFile)
	if t.SampleRatio == 0 {
		t.SampleRatio = DefaultTelemetrySampleRatio
	}
	if t.ServiceName == "" {
		t.ServiceName = DefaultTelemetryServiceName
	}
}

func (t *Telemetry) validate(ps *problems) {
	if t.OTLPEndpoint != "" {
		u, err := url.Parse(t.OTLPEndpoint)
		if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			ps.add("telemetry.otlp_endpoint", "%q is not an http(s) URL; write the OTLP/HTTP receiver, e.g. http://otel-collector:4318", t.OTLPEndpoint)
		}
	}
	if t.OTLPHeadersFile != "" {
		if t.OTLPEndpoint == "" {
			ps.add("telemetry.otlp_headers_file", "set but telemetry.otlp_endpoint is not; set the endpoint or remove the headers file")
		}
		if b, err := os.ReadFile(t.OTLPHeadersFile); err != nil {
			ps.add("telemetry.otlp_headers_file", "cannot read %s: %v", t.OTLPHeadersFile, unwrapPathError(err))
		} else if _, err := ParseOTLPHeaders(string(b)); err != nil {
			ps.add("telemetry.otlp_headers_file", "%s: %v", t.OTLPHeadersFile, err)
		}
	}
	if t.SampleRatio <= 0 || t.SampleRatio > 1 {
		ps.add("telemetry.sample_ratio", "%g is outside (0, 1]; 1 traces every pass, 0.1 one in ten", t.SampleRatio)
	}
}

// ParseOTLPHeaders parses "Name: value" lines (blank lines and lines
// starting with # skipped). Errors never echo a value.
func ParseOTLPHeaders(text string) (map[string]string, error) {
	h := map[string]string{}
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("line %d is not a \"Name: value\" header", i+1)
		}
		if value == "" {
			return nil, fmt.Errorf("line %d: header %s has an empty value; an empty secret never means \"no secret\"", i+1, name)
		}
		h[name] = value
	}
	if len(h) == 0 {
		return nil, fmt.Errorf("no headers; write \"Name: value\" lines or remove telemetry.otlp_headers_file")
	}
	return h, nil
}
