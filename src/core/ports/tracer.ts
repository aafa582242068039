/**
 * The tracing port: spans of the pipeline (HTTP request, append, publication, claim, side
 * effect, projection), parented explicitly by W3C `traceparent` strings, the form that travels in
 * an envelope's metadata and in Kafka headers. There is no ambient context: whoever starts a span
 * names its parent, so one command's spans form one trace across processes and batches.
 *
 * Guarantees every implementation gives:
 * - `startSpan`, the span's methods and `traceparent` never throw and never do I/O on the caller's
 *   path; export (if any) happens in the background and its failures are the adapter's to log.
 * - A malformed or absent `parent` starts a new trace; it is never an error.
 * - `end` is idempotent; a span never ended is simply not exported.
 * The no-op tracer (tracing off) costs one small object per span and hands the parent on as the
 * span's `traceparent`, so carrying it changes nothing.
 */
export type SpanKind = 'internal' | 'server' | 'client' | 'producer' | 'consumer'

export type AttributeValue = string | number | boolean

/** Attributes by OpenTelemetry semantic-convention name; `undefined` values are left out. */
export type SpanAttributes = Readonly<Record<string, AttributeValue | undefined>>

export type SpanOptions = {
  readonly kind?: SpanKind
  /** The parent's W3C traceparent (`00-<trace id>-<span id>-<flags>`); absent: a new trace. */
  readonly parent?: string | undefined
  /** Spans this one relates to without being their child, as traceparents. */
  readonly links?: readonly string[]
  readonly attributes?: SpanAttributes
}

export type Span = {
  /**
   * This span's traceparent, for what it causes (an envelope's metadata, a Kafka header) to name
   * as its parent. The no-op span's is the parent it was given (undefined when none).
   */
  readonly traceparent: string | undefined
  setAttributes(attributes: SpanAttributes): void
  /** Names the span anew (an HTTP span learns its route after it started). */
  rename(name: string): void
  /** Marks the span failed: an error (recorded with its type and message) or a description. */
  fail(error: unknown): void
  end(): void
}

export type Tracer = {
  /** False for the no-op tracer: callers skip what they would compute only for spans. */
  readonly enabled: boolean
  startSpan(name: string, options?: SpanOptions): Span
}

const nothing = (): void => {}

const NO_PARENT: Span = Object.freeze({
  traceparent: undefined,
  setAttributes: nothing,
  rename: nothing,
  fail: nothing,
  end: nothing,
})

/** Tracing off: spans that record nothing and pass their parent's traceparent on. */
export const noopTracer: Tracer = Object.freeze({
  enabled: false,
  startSpan: (_name: string, options?: SpanOptions): Span =>
    options?.parent === undefined
      ? NO_PARENT
      : {
          traceparent: options.parent,
          setAttributes: nothing,
          rename: nothing,
          fail: nothing,
          end: nothing,
        },
})

/**
 * Runs `fn` in a span: a throw marks it failed and is rethrown; the span ends either way.
 */
export const inSpan = async <T>(
  tracer: Tracer,
  name: string,
  options: SpanOptions,
  fn: (span: Span) => Promise<T>,
): Promise<T> => {
  const span = tracer.startSpan(name, options)
  try {
    return await fn(span)
  } catch (error) {
    span.fail(error)
    throw error
  } finally {
    span.end()
  }
}
