import assert from 'node:assert/strict'
import type { HttpApp } from '../../src/http/app.ts'

export type Reply = {
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
  readonly text: string
  readonly json: any
}

export type OmsClient = {
  request(
    method: string,
    path: string,
    options?: { body?: unknown; raw?: string | Uint8Array; headers?: Record<string, string> },
  ): Promise<Reply>
  get(path: string, headers?: Record<string, string>): Promise<Reply>
  post(path: string, body: unknown, headers?: Record<string, string>): Promise<Reply>
  put(path: string, body: unknown, headers?: Record<string, string>): Promise<Reply>
  del(path: string, headers?: Record<string, string>): Promise<Reply>
  /** Polls the command's status until it is terminal; returns the final status body. */
  settle(commandId: string, timeoutMs?: number): Promise<Reply['json']>
}

const toReply = (status: number, headers: Record<string, string>, text: string): Reply => {
  let json: unknown
  try {
    json = text === '' ? undefined : JSON.parse(text)
  } catch {
    json = undefined
  }
  return { status, headers, text, json }
}

const withVerbs = (request: OmsClient['request']): OmsClient => {
  const client: OmsClient = {
    request,
    get: (path, headers) => request('GET', path, headers === undefined ? {} : { headers }),
    post: (path, body, headers) => request('POST', path, { body, ...(headers ? { headers } : {}) }),
    put: (path, body, headers) => request('PUT', path, { body, ...(headers ? { headers } : {}) }),
    del: (path, headers) => request('DELETE', path, headers === undefined ? {} : { headers }),
    async settle(commandId, timeoutMs = 30_000) {
      const until = Date.now() + timeoutMs
      let last: Reply | undefined
      while (Date.now() < until) {
        last = await client.get(`/api/v1/commands/${commandId}`)
        assert.equal(last.status, 200, last.text)
        if (last.json.status === 'COMPLETED' || last.json.status === 'FAILED') return last.json
        await new Promise((r) => setTimeout(r, 25))
      }
      assert.fail(`command ${commandId} did not settle within ${timeoutMs} ms: ${last?.text}`)
    },
  }
  return client
}

const encode = (options: { body?: unknown; raw?: string | Uint8Array }): Uint8Array | null => {
  if (options.raw !== undefined) {
    return typeof options.raw === 'string' ? new TextEncoder().encode(options.raw) : options.raw
  }
  return options.body === undefined ? null : new TextEncoder().encode(JSON.stringify(options.body))
}

/** A client of the app in-process (no socket): the app is a function of a request. */
export const inProcessClient = (app: HttpApp, token?: string): OmsClient =>
  withVerbs(async (method, path, options = {}) => {
    const body = encode(options)
    const headers: Record<string, string> = {
      ...(body === null || options.raw !== undefined ? {} : { 'content-type': 'application/json' }),
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
    }
    for (const [k, v] of Object.entries(options.headers ?? {})) headers[k.toLowerCase()] = v
    const tooLarge = body !== null && body.length > app.maxBodyBytes
    const r = await app.handle({ method, url: path, headers, body: tooLarge ? 'too_large' : body })
    return toReply(r.status, { ...r.headers }, r.body)
  })

/** A client over a real port. */
export const httpClient = (baseUrl: string, token?: string): OmsClient =>
  withVerbs(async (method, path, options = {}) => {
    const body = encode(options)
    const headers: Record<string, string> = {
      ...(body === null || options.raw !== undefined ? {} : { 'content-type': 'application/json' }),
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
      ...options.headers,
    }
    const res = await fetch(baseUrl + path, {
      method,
      headers,
      ...(body === null ? {} : { body }),
    })
    const out: Record<string, string> = {}
    res.headers.forEach((v, k) => {
      out[k] = v
    })
    return toReply(res.status, out, await res.text())
  })

/**
 * `fetch` over the app in-process, for the typed client (`cairn/client`): well-formed use of the
 * API goes through the client; `inProcessClient` stays for requests the client cannot send
 * (malformed bodies, wrong headers).
 */
export const appFetch =
  (app: HttpApp) =>
  async (input: URL | string, init: RequestInit = {}): Promise<Response> => {
    const url = new URL(String(input))
    const headers: Record<string, string> = {}
    new Headers(init.headers).forEach((v, k) => {
      headers[k] = v
    })
    const body = typeof init.body === 'string' ? new TextEncoder().encode(init.body) : null
    const tooLarge = body !== null && body.length > app.maxBodyBytes
    const r = await app.handle({
      method: init.method ?? 'GET',
      url: url.pathname + url.search,
      headers,
      body: tooLarge ? 'too_large' : body,
    })
    const empty = r.status === 204 || r.status === 304 || r.body === ''
    return new Response(empty ? null : r.body, { status: r.status, headers: r.headers })
  }
