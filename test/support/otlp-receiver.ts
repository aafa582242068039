import http from 'node:http'
import type { AddressInfo } from 'node:net'

/** A span as an OTLP/HTTP receiver got it (OTLP/JSON: ids in hex, kind as a number). */
export type ReceivedSpan = {
  readonly service: string
  readonly traceId: string
  readonly spanId: string
  /** '' for a root span. */
  readonly parentSpanId: string
  readonly name: string
  /** 1 internal, 2 server, 3 client, 4 producer, 5 consumer. */
  readonly kind: number
  readonly attributes: Readonly<Record<string, unknown>>
  /** 2: error. */
  readonly statusCode: number
  readonly links: readonly { readonly traceId: string; readonly spanId: string }[]
}

export const SPAN_KIND = { internal: 1, server: 2, client: 3, producer: 4, consumer: 5 } as const

export type OtlpReceiver = {
  /** The base URL, for OTEL_EXPORTER_OTLP_ENDPOINT (the exporter appends /v1/traces). */
  readonly url: string
  readonly spans: ReceivedSpan[]
  /** Requests received, whatever their path. */
  readonly requests: number
  close(): Promise<void>
}

type AnyValue = {
  stringValue?: string
  intValue?: number | string
  boolValue?: boolean
  doubleValue?: number
}
type KeyValue = { key: string; value?: AnyValue }

const valueOf = (v: AnyValue | undefined): unknown =>
  v === undefined
    ? undefined
    : (v.stringValue ??
      (v.intValue === undefined ? undefined : Number(v.intValue)) ??
      v.boolValue ??
      v.doubleValue)

const attributesOf = (list: readonly KeyValue[] | undefined): Record<string, unknown> =>
  Object.fromEntries((list ?? []).map((kv) => [kv.key, valueOf(kv.value)]))

/**
 * An OTLP/HTTP traces receiver on 127.0.0.1 (what an OpenTelemetry Collector's `otlp` receiver
 * does for `POST /v1/traces` with a JSON body): it keeps the spans it is sent, answers 200 with
 * an empty partial-success body, and 415 to anything but JSON.
 */
export const startOtlpReceiver = async (): Promise<OtlpReceiver> => {
  const spans: ReceivedSpan[] = []
  let requests = 0
  const server = http.createServer((req, res) => {
    requests++
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/traces') {
        res.writeHead(404).end()
        return
      }
      if (!(req.headers['content-type'] ?? '').startsWith('application/json')) {
        res.writeHead(415).end()
        return
      }
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
        resourceSpans?: {
          resource?: { attributes?: KeyValue[] }
          scopeSpans?: {
            spans?: {
              traceId: string
              spanId: string
              parentSpanId?: string
              name: string
              kind: number
              attributes?: KeyValue[]
              status?: { code?: number }
              links?: { traceId: string; spanId: string }[]
            }[]
          }[]
        }[]
      }
      for (const rs of body.resourceSpans ?? []) {
        const name = attributesOf(rs.resource?.attributes)['service.name']
        const service = typeof name === 'string' ? name : ''
        for (const ss of rs.scopeSpans ?? []) {
          for (const s of ss.spans ?? []) {
            spans.push({
              service,
              traceId: s.traceId,
              spanId: s.spanId,
              parentSpanId: s.parentSpanId ?? '',
              name: s.name,
              kind: s.kind,
              attributes: attributesOf(s.attributes),
              statusCode: s.status?.code ?? 0,
              links: (s.links ?? []).map((l) => ({ traceId: l.traceId, spanId: l.spanId })),
            })
          }
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    spans,
    get requests() {
      return requests
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}
