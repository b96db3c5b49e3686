package engine

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Span names of a pass: a root span per pass with one child per stage.
const (
	SpanPass    = "dirsync.pass"
	SpanRead    = "read"
	SpanMap     = "map"
	SpanPublish = "publish"
)

// SetTracer makes the engine trace its passes with t (spans SpanPass,
// SpanRead, SpanMap, SpanPublish). The default traces nothing. Call it
// before the first Run.
func (e *Engine) SetTracer(t trace.Tracer) {
	e.tracer = t
}

func defaultTracer() trace.Tracer {
	return noop.NewTracerProvider().Tracer("")
}

// startPass starts the root span of a pass.
func (e *Engine) startPass(ctx context.Context, account string, opts Options) (context.Context, trace.Span) {
	return e.tracer.Start(ctx, SpanPass, trace.WithAttributes(
		attribute.String("dirsync.account", account),
		attribute.String("dirsync.mode", string(opts.Mode)),
		attribute.Bool("dirsync.dry_run", opts.DryRun),
		attribute.Bool("dirsync.force", opts.Force),
	))
}

// endPass records the pass's outcome on its span and ends it.
func endPass(span trace.Span, rep *Report, err error) {
	span.SetAttributes(
		attribute.String("dirsync.result", string(rep.Result)),
		attribute.Int("dirsync.changes.published", rep.Changes.Published),
		attribute.Bool("dirsync.read_failed", rep.ReadFailed),
	)
	endSpan(span, err)
}

// endSpan marks span failed when err is not nil, and ends it.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
