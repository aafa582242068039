import {
  DiagLogLevel,
  ROOT_CONTEXT,
  SpanKind as OtelSpanKind,
  SpanStatusCode,
  defaultTextMapGetter,
  defaultTextMapSetter,
  diag,
  trace,
} from '@opentelemetry/api'
import type { Attributes, Context, Link, Span as OtelSpan } from '@opentelemetry/api'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { resourceFromAttributes } from '@opentelemetry/resources'
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from '@opentelemetry/sdk-trace'
import type { Sampler } from '@opentelemetry/sdk-trace'
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions'
import { silentLogger } from '../../core/ports/logger.ts'
import type { Logger } from '../../core/ports/logger.ts'
import type {
  Span,
  SpanAttributes,
  SpanKind,
  SpanOptions,
  Tracer,
} from '../../core/ports/tracer.ts'

export type OtlpTracerOptions = {
  /** The OTLP/HTTP traces URL, e.g. `http://127.0.0.1:4318/v1/traces` (spans go as JSON). */
  readonly url: string
  /** Sent with every export (an API key of a hosted backend). */
  readonly headers?: Readonly<Record<string, string>>
  /** The `service.name` of every span, e.g. `cairn-oms`. */
  readonly serviceName: string
  /** Share of new traces sampled (default 1); parent-based: a propagated decision is followed. */
  readonly sampler?: { readonly ratio: number; readonly parentBased: boolean }
  /** Ended spans are exported in batches at least this often (default 1,000 ms). */
  readonly exportIntervalMs?: number
  /** Ended spans waiting for export; beyond, new ones are dropped (default 8,192). */
  readonly maxQueueSize?: number
  /** Export failures are logged here (warn), at most once a minute. */
  readonly logger?: Logger
}

/** A tracer exporting over OTLP/HTTP; `close()` exports what is left, then stops. */
export type OtlpTracer = Tracer & {
  /** Exports every ended span now. */
  flush(): Promise<void>
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

const KINDS: Readonly<Record<SpanKind, OtelSpanKind>> = {
  internal: OtelSpanKind.INTERNAL,
  server: OtelSpanKind.SERVER,
  client: OtelSpanKind.CLIENT,
  producer: OtelSpanKind.PRODUCER,
  consumer: OtelSpanKind.CONSUMER,
}

const propagator = new W3CTraceContextPropagator()

/** The remote context a traceparent names (ROOT when absent or malformed: a new trace). */
const contextOf = (traceparent: string | undefined): Context =>
  traceparent === undefined
    ? ROOT_CONTEXT
    : propagator.extract(ROOT_CONTEXT, { traceparent }, defaultTextMapGetter)

const attributesOf = (attributes: SpanAttributes | undefined): Attributes => {
  const out: Attributes = {}
  if (attributes === undefined) return out
  for (const [k, v] of Object.entries(attributes)) if (v !== undefined) out[k] = v
  return out
}

const samplerOf = (options: OtlpTracerOptions['sampler']): Sampler => {
  const ratio = options?.ratio ?? 1
  const root =
    ratio >= 1
      ? new AlwaysOnSampler()
      : ratio <= 0
        ? new AlwaysOffSampler()
        : new TraceIdRatioBasedSampler(ratio)
  return options?.parentBased === false ? root : new ParentBasedSampler({ root })
}

/**
 * The OpenTelemetry SDK behind the tracer port: spans parented by the traceparents the pipeline
 * carries (no context manager, no global provider: several tracers may live in one process),
 * batched and POSTed as OTLP/JSON by the official exporter.
 */
export const createOtlpTracer = (options: OtlpTracerOptions): OtlpTracer => {
  const log = (options.logger ?? silentLogger).child({ component: 'tracing' })
  // The SDK reports export failures through its diagnostics logger, which is process-wide.
  let warnedAt = Number.NEGATIVE_INFINITY
  const warn = (message: string, ...args: unknown[]): void => {
    if (performance.now() - warnedAt < 60_000) return
    warnedAt = performance.now()
    log.warn({ err: [message, ...args.map(String)].join(' ').slice(0, 500) }, 'tracing: export')
  }
  const nothing = (): void => {}
  diag.setLogger(
    { error: warn, warn, info: nothing, debug: nothing, verbose: nothing },
    { logLevel: DiagLogLevel.WARN, suppressOverrideMessage: true },
  )
  const exporter = new OTLPTraceExporter({
    url: options.url,
    headers: { ...options.headers },
  })
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: options.serviceName }),
    sampler: samplerOf(options.sampler),
    spanProcessors: [
      new BatchSpanProcessor({
        exporter,
        scheduledDelayMillis: options.exportIntervalMs ?? 1_000,
        maxQueueSize: options.maxQueueSize ?? 8_192,
        maxExportBatchSize: 512,
      }),
    ],
  })
  const tracer = provider.getTracer('cairn')

  const wrap = (span: OtelSpan): Span => {
    let traceparent: string | undefined
    let ended = false
    return {
      // Formatted when asked: most spans (claims, appends) are never anybody's parent.
      get traceparent() {
        if (traceparent === undefined) {
          const carrier: Record<string, string> = {}
          propagator.inject(trace.setSpan(ROOT_CONTEXT, span), carrier, defaultTextMapSetter)
          traceparent = carrier['traceparent']
        }
        return traceparent
      },
      setAttributes: (attributes) => {
        span.setAttributes(attributesOf(attributes))
      },
      rename: (name) => {
        span.updateName(name)
      },
      fail: (error) => {
        if (error instanceof Error) {
          span.recordException(error)
          const code = (error as { code?: unknown }).code
          span.setAttribute('error.type', typeof code === 'string' ? code : error.name)
          span.setStatus({ code: SpanStatusCode.ERROR, message: error.message.slice(0, 500) })
        } else {
          span.setStatus({ code: SpanStatusCode.ERROR, message: String(error).slice(0, 500) })
        }
      },
      end: () => {
        // The SDK warns of a second end; the port promises it is harmless.
        if (ended) return
        ended = true
        span.end()
      },
    }
  }

  const startSpan = (name: string, spanOptions: SpanOptions = {}): Span => {
    const links: Link[] = []
    for (const tp of spanOptions.links ?? []) {
      const context = trace.getSpanContext(contextOf(tp))
      if (context !== undefined) links.push({ context })
    }
    return wrap(
      tracer.startSpan(
        name,
        {
          kind: KINDS[spanOptions.kind ?? 'internal'],
          attributes: attributesOf(spanOptions.attributes),
          ...(links.length > 0 ? { links } : {}),
        },
        contextOf(spanOptions.parent),
      ),
    )
  }

  let closing: Promise<void> | undefined
  const close = (): Promise<void> => {
    closing ??= provider.shutdown().catch((error: unknown) => {
      log.warn({ err: String(error) }, 'tracing: spans left unexported at close')
    })
    return closing
  }

  return {
    enabled: true,
    startSpan,
    flush: () => provider.forceFlush(),
    close,
    [Symbol.asyncDispose]: close,
  }
}
