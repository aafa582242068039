import http from 'node:http'
import type { Duplex } from 'node:stream'
import type { Logger } from '../core/ports/logger.ts'
import type { HttpApp, HttpRequest } from '../http/app.ts'

/** Writes a streamed body as it comes; stops when the client leaves or the server closes. */
const sendStream = async (
  res: http.ServerResponse,
  first: string,
  stream: (signal: AbortSignal) => AsyncIterable<string>,
  closing: AbortSignal,
): Promise<void> => {
  const left = new AbortController()
  const stop = () => left.abort()
  res.once('close', stop)
  closing.addEventListener('abort', stop, { once: true })
  try {
    if (first !== '') res.write(first)
    for await (const chunk of stream(left.signal)) {
      if (left.signal.aborted) break
      res.write(chunk)
    }
  } finally {
    closing.removeEventListener('abort', stop)
    // On close, the connection goes too: it would otherwise idle until its keep-alive ends.
    res.end(() => {
      if (closing.aborted) res.socket?.destroy()
    })
  }
}

export type Served = {
  readonly url: string
  /** Stops accepting, lets requests in flight finish (up to the deadline), then closes. */
  close(deadlineMs?: number): Promise<void>
}

/** What a request that is not HTTP/1.1 node can parse gets, by the parser's error code. */
const UNPARSABLE: Readonly<Record<string, { status: number; title: string; detail: string }>> = {
  HPE_HEADER_OVERFLOW: {
    status: 431,
    title: 'Request header fields too large',
    detail: 'the request headers are too large',
  },
  ERR_HTTP_REQUEST_TIMEOUT: {
    status: 408,
    title: 'Request timeout',
    detail: 'the request did not arrive in time',
  },
}

/** The sockets `answerUnparsable` has answered. */
const answered = new WeakSet<Duplex>()

/**
 * A request node's HTTP parser refuses (a control character in a header, a malformed request
 * line…) gets a problem+json like any bad input, and the connection is closed gracefully: the
 * answer is sent, then the rest of what the client sends is read and dropped for a moment. Node's
 * default destroys the socket at once, so a client still sending its body gets a reset instead
 * of the answer.
 */
const answerUnparsable = (error: Error & { code?: string }, socket: Duplex): void => {
  // The parser reports again on every chunk that follows: answered once, the rest is dropped.
  if (answered.has(socket)) return
  answered.add(socket)
  // An answer already under way (a timeout while it was sent) cannot be followed by another.
  const under = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage
  if (error.code === 'ECONNRESET' || !socket.writable || under?.headersSent === true) {
    socket.destroy()
    return
  }
  const known = UNPARSABLE[error.code ?? '']
  const status = known?.status ?? 400
  const body = JSON.stringify({
    type: `urn:cairn:problem:${status === 400 ? 'malformed_request' : `http_${status}`}`,
    status,
    code: status === 400 ? 'malformed_request' : `http_${status}`,
    title: known?.title ?? 'Bad request',
    detail: known?.detail ?? `the request is not valid HTTP/1.1 (${error.code ?? 'parse error'})`,
  })
  socket.end(
    `HTTP/1.1 ${status} ${known?.title ?? 'Bad Request'}\r\ncontent-type: application/problem+json\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  )
  socket.on('error', () => {})
  socket.resume()
  setTimeout(() => socket.destroy(), 2_000).unref()
}

/**
 * Serves an app (a function of a request) over node:http. Reads the body up to the app's limit;
 * beyond it the app answers 413 and the connection is closed rather than read to the end.
 */
export const serveHttp = async (
  app: HttpApp,
  host: string,
  port: number,
  logger: Logger,
): Promise<Served> => {
  /** Aborted on close: streams (server-sent events) end instead of holding the close up. */
  const closing = new AbortController()
  const server = http.createServer((req, res) => {
    const headers: Record<string, string> = {}
    for (const [k, v] of Object.entries(req.headers)) {
      if (typeof v === 'string') headers[k] = v
      else if (Array.isArray(v)) headers[k] = v.join(', ')
    }
    const declared = Number(req.headers['content-length'] ?? '0')
    const chunks: Buffer[] = []
    let size = 0
    let tooLarge = Number.isFinite(declared) && declared > app.maxBodyBytes
    const respond = () => {
      const body: HttpRequest['body'] = tooLarge
        ? 'too_large'
        : chunks.length === 0
          ? null
          : Buffer.concat(chunks, size)
      app
        .handle({ method: req.method ?? 'GET', url: req.url ?? '/', headers, body })
        .then((r) => {
          res.writeHead(r.status, tooLarge ? { ...r.headers, connection: 'close' } : r.headers)
          if (r.stream === undefined) {
            res.end(r.body)
            return
          }
          return sendStream(res, r.body, r.stream, closing.signal)
        })
        .catch((error: unknown) => {
          logger.error({ err: String(error) }, 'http handler failed')
          if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/problem+json' })
          res.end(
            '{"type":"urn:cairn:problem:internal_error","status":500,"code":"internal_error","title":"Internal error"}',
          )
        })
    }
    if (tooLarge) {
      respond()
      return
    }
    req.on('data', (chunk: Buffer) => {
      if (tooLarge) return
      size += chunk.length
      if (size > app.maxBodyBytes) {
        tooLarge = true
        chunks.length = 0
        respond()
        req.pause()
        return
      }
      chunks.push(chunk)
    })
    req.on('end', () => {
      if (!tooLarge) respond()
    })
    req.on('error', () => res.destroy())
  })
  server.on('clientError', answerUnparsable)
  server.keepAliveTimeout = 65_000
  server.headersTimeout = 66_000
  server.requestTimeout = 120_000
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const address = server.address()
  const actualPort = typeof address === 'object' && address !== null ? address.port : port
  const shown = host.includes(':') ? `[${host}]` : host
  return {
    url: `http://${shown}:${actualPort}`,
    close: (deadlineMs = 10_000) =>
      new Promise<void>((resolve) => {
        closing.abort()
        const timer = setTimeout(() => server.closeAllConnections(), deadlineMs)
        server.close(() => {
          clearTimeout(timer)
          resolve()
        })
        server.closeIdleConnections()
      }),
  }
}
