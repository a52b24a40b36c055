package tracing

import (
	"context"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/polos-run/polos/perr"
)

// CodeExport: the OTLP exporter could not be built from the environment.
const CodeExport perr.Code = "TRACING_CONFIG"

// ServiceName is the service.name of polosd's spans unless
// OTEL_SERVICE_NAME says otherwise.
const ServiceName = "polosd"

// Enabled reports whether the standard OpenTelemetry environment asks for
// trace export: an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), OTEL_TRACES_EXPORTER is not "none"
// and OTEL_SDK_DISABLED is not "true".
func Enabled() bool {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") || strings.EqualFold(os.Getenv("OTEL_TRACES_EXPORTER"), "none") {
		return false
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Exporter hands spans to the OpenTelemetry SDK, keeping their derived ids.
type Exporter struct {
	tp *sdktrace.TracerProvider
	tr trace.Tracer
}

// NewOTLPExporter exports over OTLP/HTTP, configured entirely by the
// standard OTEL_EXPORTER_OTLP_* variables (endpoint, headers, timeout,
// compression, certificates) and the resource by OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES.
//
// Under failure: spans are batched and exported in the background; an
// unreachable collector costs the spans of that batch after the SDK's
// retries (the history keeps everything: the spans can be derived again),
// never a run's progress.
func NewOTLPExporter(ctx context.Context) (*Exporter, error) {
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, perr.Wrap(err, CodeExport, "check the OTEL_EXPORTER_OTLP_* variables", "cannot build the OTLP trace exporter")
	}
	return NewExporter(exp), nil
}

// NewExporter exports through any SDK span exporter (tests pass an
// in-memory one).
func NewExporter(exp sdktrace.SpanExporter) *Exporter {
	res := resource.Default()
	if os.Getenv("OTEL_SERVICE_NAME") == "" && !strings.Contains(os.Getenv("OTEL_RESOURCE_ATTRIBUTES"), "service.name=") {
		res, _ = resource.Merge(res, resource.NewSchemaless(attribute.String("service.name", ServiceName)))
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithIDGenerator(derivedIDs{}))
	return &Exporter{tp: tp, tr: tp.Tracer("github.com/polos-run/polos/tracing")}
}

// Export records one span with its derived ids and timestamps.
func (x *Exporter) Export(s Span) {
	ctx := context.WithValue(context.Background(), idsKey{}, s)
	if s.Parent.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: s.TraceID, SpanID: s.Parent, TraceFlags: trace.FlagsSampled, Remote: true}))
	}
	_, span := x.tr.Start(ctx, s.Name, trace.WithTimestamp(s.Start), trace.WithSpanKind(s.Kind), trace.WithAttributes(s.Attrs...))
	for _, e := range s.Events {
		span.AddEvent(e.Name, trace.WithTimestamp(e.At), trace.WithAttributes(e.Attrs...))
	}
	if s.Err != "" {
		span.SetStatus(codes.Error, s.Err)
	}
	span.End(trace.WithTimestamp(s.End))
}

// Flush exports every span recorded so far.
func (x *Exporter) Flush(ctx context.Context) error { return x.tp.ForceFlush(ctx) }

// Shutdown flushes and stops the exporter.
func (x *Exporter) Shutdown(ctx context.Context) error { return x.tp.Shutdown(ctx) }

type idsKey struct{}

// derivedIDs gives the SDK the ids a Span carries instead of random ones.
type derivedIDs struct{}

func (derivedIDs) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	s, _ := ctx.Value(idsKey{}).(Span)
	return s.TraceID, s.ID
}

func (derivedIDs) NewSpanID(ctx context.Context, _ trace.TraceID) trace.SpanID {
	s, _ := ctx.Value(idsKey{}).(Span)
	return s.ID
}
