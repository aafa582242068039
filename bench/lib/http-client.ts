import http from 'node:http'

export type HttpResult = {
  readonly status: number
  readonly json: Record<string, unknown>
  readonly text: string
}

/** A JSON client of the OMS over keep-alive sockets (a benchmark's clients, not a test's). */
export type OmsHttpClient = {
  request(method: string, path: string, body?: unknown): Promise<HttpResult>
  close(): void
}

/**
 * One `http.Agent` with keep-alive and up to `maxSockets` connections: a closed loop of `n`
 * clients holds `n` sockets open, as `n` HTTP clients would.
 */
export const createOmsHttpClient = (
  baseUrl: string,
  token: string,
  maxSockets: number,
): OmsHttpClient => {
  const agent = new http.Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets })
  const base = new URL(baseUrl)
  return {
    request(method, path, body) {
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body))
      return new Promise((resolve, reject) => {
        const req = http.request(
          {
            agent,
            host: base.hostname,
            port: base.port,
            method,
            path,
            headers: {
              authorization: `Bearer ${token}`,
              accept: 'application/json',
              ...(payload === undefined
                ? {}
                : { 'content-type': 'application/json', 'content-length': payload.length }),
            },
          },
          (res) => {
            const chunks: Buffer[] = []
            res.on('data', (c: Buffer) => chunks.push(c))
            res.on('error', reject)
            res.on('end', () => {
              const text = Buffer.concat(chunks).toString('utf8')
              let json: Record<string, unknown> = {}
              try {
                json = text === '' ? {} : (JSON.parse(text) as Record<string, unknown>)
              } catch {
                // Not JSON: the caller sees the text.
              }
              resolve({ status: res.statusCode ?? 0, json, text })
            })
          },
        )
        req.on('error', reject)
        req.end(payload)
      })
    },
    close: () => agent.destroy(),
  }
}
