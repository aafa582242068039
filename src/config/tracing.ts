import { createOtlpTracer } from '../adapters/tracing/otlp-tracer.ts'
import type { Logger } from '../core/ports/logger.ts'
import { noopTracer } from '../core/ports/tracer.ts'
import type { Tracer } from '../core/ports/tracer.ts'
import type { CairnConfig } from './env.ts'

/** A process's tracer and what ends it: `close()` exports the spans left (closed last). */
export type ProcessTracer = {
  readonly tracer: Tracer
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

/**
 * The tracer of a process: OTLP export when the configuration has an endpoint, the no-op tracer
 * otherwise (no SDK object is made, so tracing off costs nothing). `component` names the service
 * (`cairn-<component>`) unless OTEL_SERVICE_NAME does.
 */
export const openTracer = (
  config: CairnConfig,
  component: string,
  logger: Logger,
): ProcessTracer => {
  const t = config.tracing
  if (t === undefined) {
    const nothing = async (): Promise<void> => {}
    return { tracer: noopTracer, close: nothing, [Symbol.asyncDispose]: nothing }
  }
  const serviceName = t.serviceName ?? `cairn-${component}`
  const tracer = createOtlpTracer({
    url: t.url,
    headers: t.headers,
    serviceName,
    sampler: t.sampler,
    logger,
  })
  logger.info(
    // Credentials in the URL are hidden, as the headers are.
    { url: t.url.replace(/\/\/[^/@]*@/, '//***@'), service: serviceName },
    'tracing: exporting spans over OTLP/HTTP',
  )
  const close = () => tracer.close()
  return { tracer, close, [Symbol.asyncDispose]: close }
}
