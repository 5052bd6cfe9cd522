/**
 * Trace context for the logs: the ids of the span Deno's built-in OpenTelemetry (OTEL_DENO=true) made for the
 * request being handled, so an access line can name its trace. No npm package: Deno.telemetry exposes the
 * OpenTelemetry context, and Deno.serve runs each handler inside the context that holds the request's span
 * (an incoming W3C `traceparent` is continued). Reading it needs no permission.
 */

/** The ids of a span, lowercase hex as W3C trace context writes them (32 and 16 characters). */
export interface SpanIds {
  readonly traceId: string;
  readonly spanId: string;
}

/** The key under which an OpenTelemetry context holds its span (the one @opentelemetry/api uses too). */
const SPAN_KEY = Symbol.for("OpenTelemetry Context Key SPAN");

/** The part of Deno's Span that is read here. */
interface SpanLike {
  spanContext(): SpanIds;
}

/**
 * Whether Deno's OpenTelemetry is on. Deno exposes no flag for it, and reading OTEL_DENO would need
 * --allow-env, so this asks the tracer: with telemetry off, starting a span throws ("otel not initialized").
 * The probe span is never ended, so it is never exported. Should a later Deno stop throwing, activeSpan() still
 * answers correctly (no span is active when telemetry is off); it only loses its shortcut.
 */
function telemetryEnabled(): boolean {
  try {
    Deno.telemetry.tracerProvider.getTracer("shipshape").startSpan("shipshape telemetry probe");
    return true;
  } catch {
    return false;
  }
}

/** True when Deno's OpenTelemetry is on in this process (decided once, at module load). */
export const TELEMETRY_ENABLED: boolean = telemetryEnabled();

/**
 * The trace and span ids of the span active now (inside a Deno.serve handler: the request's server span), or
 * undefined when telemetry is off or no span is active. With telemetry off it costs one branch.
 */
export function activeSpan(): SpanIds | undefined {
  if (!TELEMETRY_ENABLED) return undefined;
  const span = Deno.telemetry.contextManager.active().getValue(SPAN_KEY) as SpanLike | undefined;
  return span?.spanContext();
}
