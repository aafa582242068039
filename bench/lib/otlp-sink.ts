import http from 'node:http'
import type { AddressInfo } from 'node:net'

/** An OTLP/HTTP endpoint on 127.0.0.1 that takes every export and counts it. */
export type OtlpSink = {
  /** The traces URL (`…/v1/traces`). */
  readonly url: string
  /** Export requests and body bytes received so far. */
  stats(): { readonly requests: number; readonly bytes: number }
  close(): Promise<void>
}

/**
 * Where the tracing rows export to: it answers 200 at once without parsing, so the rows measure
 * what tracing costs cairn (spans, batching, serialising, sending), not a collector's work.
 */
export const startOtlpSink = async (): Promise<OtlpSink> => {
  let requests = 0
  let bytes = 0
  const server = http.createServer((req, res) => {
    requests++
    req.on('data', (c: Buffer) => {
      bytes += c.length
    })
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}/v1/traces`,
    stats: () => ({ requests, bytes }),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}
