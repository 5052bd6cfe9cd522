/**
 * Test support (no tests here): an OpenTelemetry collector stub for OTLP over HTTP with JSON bodies
 * (OTEL_EXPORTER_OTLP_PROTOCOL=http/json), as main_test.ts's OTEL test uses, that keeps what it receives and
 * flattens the exported spans.
 */

/** One exported span, flattened: ids as OTLP/JSON writes them (lowercase hex) and its attributes by key. */
export interface ExportedSpan {
  name: string;
  /** OTLP's SpanKind: 2 is SERVER, 3 is CLIENT. */
  kind: number;
  traceId: string;
  spanId: string;
  /** Empty for a root span. */
  parentSpanId: string;
  attributes: Record<string, unknown>;
}

/** The OTLP/JSON shapes read here (only the fields used). */
interface OtlpTraces {
  resourceSpans?: {
    scopeSpans?: {
      spans?: {
        name: string;
        kind: number;
        traceId: string;
        spanId: string;
        parentSpanId?: string;
        attributes?: { key: string; value: Record<string, unknown> }[];
      }[];
    }[];
  }[];
}

/** A collector on loopback (127.0.0.1 unless given) that answers every export with 200 and keeps the bodies. */
export class CollectorStub {
  /** Every export received: the request path (/v1/traces, /v1/logs, /v1/metrics) and its parsed body. */
  readonly exports: { path: string; body: unknown }[] = [];
  #server: Deno.HttpServer<Deno.NetAddr>;

  constructor(hostname = "127.0.0.1") {
    this.#server = Deno.serve({ port: 0, hostname, onListen() {} }, async (req) => {
      this.exports.push({ path: new URL(req.url).pathname, body: await req.json() });
      return Response.json({});
    });
  }

  /** The base URL to give as OTEL_EXPORTER_OTLP_ENDPOINT. */
  get endpoint(): string {
    return `http://${this.#server.addr.hostname}:${this.#server.addr.port}`;
  }

  /** The environment that makes a Deno process export its telemetry here, as OTLP/JSON. */
  env(): Record<string, string> {
    return {
      OTEL_DENO: "true",
      OTEL_EXPORTER_OTLP_ENDPOINT: this.endpoint,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_SERVICE_NAME: "shipshape-test",
    };
  }

  /** Every span received so far, in the order received. */
  spans(): ExportedSpan[] {
    const spans: ExportedSpan[] = [];
    for (const { path, body } of this.exports) {
      if (path !== "/v1/traces") continue;
      for (const resource of (body as OtlpTraces).resourceSpans ?? []) {
        for (const scope of resource.scopeSpans ?? []) {
          for (const span of scope.spans ?? []) {
            const attributes: Record<string, unknown> = {};
            for (const { key, value } of span.attributes ?? []) attributes[key] = Object.values(value)[0];
            spans.push({
              name: span.name,
              kind: span.kind,
              traceId: span.traceId,
              spanId: span.spanId,
              parentSpanId: span.parentSpanId ?? "",
              attributes,
            });
          }
        }
      }
    }
    return spans;
  }

  /** The server spans (kind SERVER) of requests to this path. */
  serverSpans(path: string): ExportedSpan[] {
    return this.spans().filter((s) => s.kind === 2 && s.attributes["url.path"] === path);
  }

  /** Stops the stub. */
  async close(): Promise<void> {
    await this.#server.shutdown();
  }
}
