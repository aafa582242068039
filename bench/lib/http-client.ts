import http from 'node:http'
import { createClient } from '../../src/client/index.ts'
import type { CairnClient } from '../../src/client/index.ts'

/** The typed client (`cairn/client`) of a benchmark, over its own pool of keep-alive sockets. */
export type BenchClient = CairnClient & { close(): void }

/**
 * `cairn/client` whose requests go through one `http.Agent` with keep-alive and up to
 * `maxSockets` connections: a closed loop of `n` clients holds `n` sockets open, as `n` HTTP
 * clients would. node:http rather than the global fetch keeps the client's own CPU low on a
 * host it shares with the server. Writes are not retried: an error is the bench's to count.
 */
export const createBenchClient = (
  baseUrl: string,
  token: string,
  maxSockets: number,
): BenchClient => {
  const agent = new http.Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets })
  const client = createClient({
    baseUrl,
    token,
    retries: 0,
    fetch: agentFetch(agent) as typeof fetch,
  })
  return { ...client, close: () => agent.destroy() }
}

/** The part of `fetch` the client uses, over node:http and `agent`. */
const agentFetch =
  (agent: http.Agent) =>
  (input: URL, init: RequestInit): Promise<Response> =>
    new Promise((resolve, reject) => {
      const body = typeof init.body === 'string' ? Buffer.from(init.body) : undefined
      const req = http.request(
        {
          agent,
          host: input.hostname,
          port: input.port,
          method: init.method ?? 'GET',
          path: input.pathname + input.search,
          headers: {
            ...(init.headers as Record<string, string>),
            ...(body === undefined ? {} : { 'content-length': body.length }),
          },
        },
        (res) => {
          const chunks: Buffer[] = []
          res.on('data', (c: Buffer) => chunks.push(c))
          res.on('error', reject)
          res.on('end', () => {
            const headers = new Headers()
            for (const [k, v] of Object.entries(res.headers)) {
              for (const one of Array.isArray(v) ? v : v === undefined ? [] : [v]) {
                headers.append(k, one)
              }
            }
            const status = res.statusCode ?? 0
            const empty = status === 204 || status === 304 || chunks.length === 0
            resolve(new Response(empty ? null : Buffer.concat(chunks), { status, headers }))
          })
        },
      )
      req.on('error', reject)
      req.end(body)
    })
