// Package telemetry exports OpenTelemetry traces of sync passes over
// OTLP/HTTP when telemetry.otlp_endpoint is configured. The engine creates
// the spans through the trace API; this package only builds the provider
// that exports them.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"

	"github.com/dirsync/dirsync/internal/config"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
)

// TracerName is the instrumentation scope of dirsync's spans.
const TracerName = "github.com/dirsync/dirsync"

// Tracing is a tracer and the function that flushes and stops its exporter.
type Tracing struct {
	Tracer trace.Tracer
	// Shutdown exports the spans still buffered and stops the exporter; it
	// is a no-op when tracing is off. Call it once, on exit.
	Shutdown func(context.Context) error
}

// New returns the tracing cfg asks for: a no-op tracer when
// telemetry.otlp_endpoint is empty, otherwise one exporting batches of
// spans to the endpoint. version is the service.version attribute.
func New(cfg config.Telemetry, version string) (Tracing, error) {
	if !cfg.Enabled() {
		return Tracing{Tracer: noop.NewTracerProvider().Tracer(TracerName), Shutdown: func(context.Context) error { return nil }}, nil
	}
	opts, err := exporterOptions(cfg)
	if err != nil {
		return Tracing{}, err
	}
	// The exporter connects lazily: a receiver that is down loses spans
	// (logged by the SDK's error handler), never a pass.
	exp, err := otlptracehttp.New(context.Background(), opts...)
	if err != nil {
		return Tracing{}, fmt.Errorf("telemetry: OTLP exporter: %w", err)
	}
	res := resource.NewSchemaless(
		attribute.String("service.name", cfg.ServiceName),
		attribute.String("service.version", version),
	)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))),
	)
	return Tracing{Tracer: tp.Tracer(TracerName), Shutdown: tp.Shutdown}, nil
}

func exporterOptions(cfg config.Telemetry) ([]otlptracehttp.Option, error) {
	u, err := url.Parse(cfg.OTLPEndpoint)
	if err != nil {
		return nil, fmt.Errorf("telemetry.otlp_endpoint: %w", err)
	}
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(u.Host)}
	if u.Scheme == "http" {
		opts = append(opts, otlptracehttp.WithInsecure())
	}
	if u.Path != "" && u.Path != "/" {
		opts = append(opts, otlptracehttp.WithURLPath(u.Path))
	}
	if cfg.OTLPHeadersFile != "" {
		b, err := os.ReadFile(cfg.OTLPHeadersFile)
		if err != nil {
			return nil, fmt.Errorf("telemetry.otlp_headers_file: %w", err)
		}
		h, err := config.ParseOTLPHeaders(string(b))
		if err != nil {
			return nil, errors.New("telemetry.otlp_headers_file: " + err.Error())
		}
		opts = append(opts, otlptracehttp.WithHeaders(h))
	}
	return opts, nil
}

// LogExportErrors sends the OpenTelemetry SDK's errors (an unreachable
// receiver, a refused export) to log instead of stderr. The SDK's error
// handler is process-wide: main calls this once.
func LogExportErrors(log *zap.Logger) {
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("telemetry: trace export failed; passes are unaffected", zap.Error(err))
	}))
}
