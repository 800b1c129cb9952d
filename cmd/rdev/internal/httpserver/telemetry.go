package httpserver

import (
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/rdev-dev/rdev/pkg/telemetry/propagate"
)

// Telemetry instruments a Server with otelhttp: a server span per request
// (continuing the caller's traceparent) and the http.server.* metrics,
// labelled with the matched route, never the raw path.
type Telemetry struct {
	// TracerProvider makes the spans of requests no Routes prefix matches.
	TracerProvider trace.TracerProvider
	// Routes maps a path prefix to the tracer provider of the service
	// serving it, so each service's requests carry its service.name.
	Routes        map[string]trace.TracerProvider
	MeterProvider metric.MeterProvider
	// Metrics, when set, is served at GET /metrics.
	Metrics http.Handler
}

// Instrument wraps the server's handler; call it before Serve.
func (s *Server) Instrument(t Telemetry) {
	if t.Metrics != nil {
		s.Echo.GET("/metrics", echo.WrapHandler(t.Metrics))
	}
	// Probes and scrapes would drown the traces.
	filter := otelhttp.WithFilter(func(r *http.Request) bool {
		switch r.URL.Path {
		case "/metrics", "/healthz", "/readyz":
			return false
		}
		return true
	})
	wrap := func(tp trace.TracerProvider) http.Handler {
		return otelhttp.NewHandler(s.Echo, "http.server", otelhttp.WithTracerProvider(tp),
			otelhttp.WithMeterProvider(t.MeterProvider), otelhttp.WithPropagators(propagate.Propagator()), filter,
			otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method }))
	}
	def := wrap(t.TracerProvider)
	type route struct {
		prefix string
		h      http.Handler
	}
	var routes []route
	for p, tp := range t.Routes {
		routes = append(routes, route{p, wrap(tp)})
	}
	s.srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, rt := range routes {
			if strings.HasPrefix(r.URL.Path, rt.prefix) {
				rt.h.ServeHTTP(w, r)
				return
			}
		}
		def.ServeHTTP(w, r)
	})
	s.Echo.Use(routeName)
}

// routeName names the request's span after the matched route and adds the
// route to its metrics.
func routeName(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		route := c.Path()
		ctx := c.Request().Context()
		if span := trace.SpanFromContext(ctx); span.IsRecording() {
			span.SetName(c.Request().Method + " " + route)
			span.SetAttributes(attribute.String("http.route", route))
		}
		if l, ok := otelhttp.LabelerFromContext(ctx); ok {
			l.Add(attribute.String("http.route", route))
		}
		return next(c)
	}
}
