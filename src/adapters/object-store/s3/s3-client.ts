import http from 'node:http'
import https from 'node:https'
import { CairnError, ErrorCode } from '../../../core/errors.ts'
import { createSigner, EMPTY_PAYLOAD_HASH, sha256Hex, uriEncode } from './sigv4.ts'
import type { Credentials } from './sigv4.ts'

/**
 * A small S3 client: path-style requests, SigV4, keep-alive sockets. Only what cairn uses.
 * Status codes come back as values; transport failures throw a retryable `CairnError`.
 */
export type S3ClientOptions = {
  readonly endpoint: string
  readonly region: string
  readonly credentials: Credentials
  /** Sockets kept open per host (default 128). */
  readonly maxSockets?: number
  /**
   * A request fails (retryable, OBJECT_STORE_UNAVAILABLE) when nothing moved for this long, in
   * milliseconds (default 30,000): waiting for a socket, connecting, or between two chunks of the
   * answer. A server that hangs (SIGSTOP, a dead host) cannot hold a caller longer.
   */
  readonly timeoutMs?: number
}

export type S3Response = {
  readonly status: number
  readonly headers: http.IncomingHttpHeaders
  readonly body: Buffer
}

export type S3Request = {
  readonly method: 'GET' | 'PUT' | 'HEAD' | 'DELETE' | 'POST'
  readonly bucket: string
  readonly key?: string
  readonly query?: readonly (readonly [string, string])[]
  readonly headers?: Record<string, string>
  readonly body?: Uint8Array
}

export type S3Client = {
  request(req: S3Request): Promise<S3Response>
  close(): void
}

export const createS3Client = (options: S3ClientOptions): S3Client => {
  const url = new URL(options.endpoint)
  const secure = url.protocol === 'https:'
  if (!secure && url.protocol !== 'http:') {
    throw new CairnError(ErrorCode.INVALID_CONFIG, `S3 endpoint must be http(s): ${url.protocol}`)
  }
  const transport = secure ? https : http
  const agent = new transport.Agent({
    keepAlive: true,
    maxSockets: options.maxSockets ?? 128,
    maxFreeSockets: options.maxSockets ?? 128,
    scheduling: 'lifo',
  })
  const host = url.host
  const basePath = url.pathname.replace(/\/+$/, '')
  const signer = createSigner(options.credentials)
  const timeoutMs = options.timeoutMs ?? 30_000

  const request = (req: S3Request): Promise<S3Response> => {
    const keyPath = req.key === undefined ? '' : `/${uriEncode(req.key, true)}`
    const path = `${basePath}/${uriEncode(req.bucket, false)}${keyPath}`
    const query = req.query ?? []
    const payloadHash = req.body === undefined ? EMPTY_PAYLOAD_HASH : sha256Hex(req.body)
    const headers: Record<string, string> = { host, ...req.headers }
    if (req.body !== undefined) headers['content-length'] = String(req.body.byteLength)
    const signed = signer.sign({
      method: req.method,
      path,
      query,
      headers,
      payloadHash,
      region: options.region,
      now: new Date(),
    })
    const search =
      query.length === 0
        ? ''
        : `?${query.map(([k, v]) => `${uriEncode(k, false)}=${uriEncode(v, false)}`).join('&')}`
    const send = (): Promise<S3Response> =>
      new Promise<S3Response>((resolve, reject) => {
        const r = transport.request(
          {
            agent,
            protocol: url.protocol,
            hostname: url.hostname,
            port: url.port,
            method: req.method,
            path: path + search,
            headers: { ...headers, ...signed },
          },
          (res) => {
            const chunks: Buffer[] = []
            const socket = res.socket
            res.on('data', (c: Buffer) => chunks.push(c))
            res.on('error', (cause) => reject(transportError(req, cause)))
            res.on('end', () => {
              // A server may refuse a PUT (412) before reading its body and then drop the
              // connection: never hand such a socket to the next request.
              if (req.body !== undefined && (res.statusCode ?? 0) >= 300) socket.destroy()
              resolve({
                status: res.statusCode ?? 0,
                headers: res.headers,
                body: Buffer.concat(chunks),
              })
            })
          },
        )
        // Covers the wait for a pooled socket too (r.setTimeout starts only once it has one).
        let timedOut = false
        const idle = setTimeout(() => {
          timedOut = true
          r.destroy(new Error(`no progress for ${timeoutMs} ms`))
        }, timeoutMs)
        r.on('response', (res) => {
          idle.refresh()
          res.on('data', () => idle.refresh())
        })
        r.on('close', () => clearTimeout(idle))
        r.on('error', (cause) => {
          const error = transportError(req, cause)
          // A kept-alive socket the server closed meanwhile: safe to resend what has no side effect
          // (not a server that hangs: that is the caller's to retry, or not).
          reject(
            r.reusedSocket && !timedOut && req.method !== 'PUT' && req.method !== 'POST'
              ? new StaleSocket(error)
              : error,
          )
        })
        r.end(req.body)
      })
    return send().catch((error: unknown) => {
      if (!(error instanceof StaleSocket)) throw error
      return send().catch((again: unknown) => {
        throw again instanceof StaleSocket ? again.error : again
      })
    })
  }

  return {
    request,
    close: () => agent.destroy(),
  }
}

/** Marks a failure on a reused socket, which is retried once on a fresh one. */
class StaleSocket extends Error {
  readonly error: CairnError
  constructor(error: CairnError) {
    super(error.message)
    this.error = error
  }
}

const transportError = (req: S3Request, cause: unknown): CairnError =>
  new CairnError(
    ErrorCode.OBJECT_STORE_UNAVAILABLE,
    `S3 ${req.method} ${req.bucket}/${req.key ?? ''} failed: ${cause instanceof Error ? cause.message : String(cause)}`,
    { retryable: true, cause },
  )

/** The `<Code>` of an S3 XML error body, if any. */
export const s3ErrorCode = (body: Buffer): string | undefined =>
  /<Code>([^<]*)<\/Code>/.exec(body.toString('utf8'))?.[1]

const XML_ENTITIES: Record<string, string> = {
  amp: '&',
  lt: '<',
  gt: '>',
  quot: '"',
  apos: "'",
}

export const decodeXmlText = (text: string): string =>
  text.replace(/&(#x[0-9a-fA-F]+|#\d+|[a-z]+);/g, (whole, entity: string) => {
    if (entity.startsWith('#x')) return String.fromCodePoint(parseInt(entity.slice(2), 16))
    if (entity.startsWith('#')) return String.fromCodePoint(parseInt(entity.slice(1), 10))
    return XML_ENTITIES[entity] ?? whole
  })

/** Keys and truncation flag of a ListObjectsV2 response. */
export const parseListObjects = (body: Buffer): { keys: string[]; truncated: boolean } => {
  const xml = body.toString('utf8')
  const keys: string[] = []
  for (const m of xml.matchAll(/<Contents>[\s\S]*?<Key>([\s\S]*?)<\/Key>[\s\S]*?<\/Contents>/g)) {
    keys.push(decodeXmlText(m[1] ?? ''))
  }
  return { keys, truncated: /<IsTruncated>true<\/IsTruncated>/.test(xml) }
}
