import type { HttpApp, HttpObserver, HttpRequest, ReadyReport } from './app.ts'
import { problem } from './problem.ts'
import type { HttpResponse } from './problem.ts'

/**
 * The operations endpoints of a process without the OMS (a publisher or a worker):
 * /healthz, /readyz and /metrics.
 */
export const createOpsApp = (options: {
  readonly ready: () => Promise<ReadyReport>
  readonly metrics: HttpObserver
}): HttpApp => ({
  maxBodyBytes: 0,
  async handle(req: HttpRequest): Promise<HttpResponse> {
    const path = req.url.split('?')[0]
    if (req.method === 'GET' && path === '/healthz') {
      return {
        status: 200,
        headers: { 'content-type': 'application/json' },
        body: '{"status":"ok"}',
      }
    }
    if (req.method === 'GET' && path === '/readyz') {
      const r = await options.ready()
      return {
        status: r.ready ? 200 : 503,
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ status: r.ready ? 'ready' : 'not ready', checks: r.checks }),
      }
    }
    if (req.method === 'GET' && path === '/metrics') {
      const m = await options.metrics.render()
      return { status: 200, headers: { 'content-type': m.contentType }, body: m.body }
    }
    return problem({
      status: 404,
      code: 'not_found',
      title: 'Not found',
      detail: 'try /healthz, /readyz or /metrics',
    })
  },
})

/**
 * What a process serves while it starts, before its dependencies are there: /healthz (alive),
 * /readyz 503 with what it waits for, /metrics; anything else 503 `starting` with Retry-After.
 */
export const createStartingApp = (options: {
  /** What the process waits for, e.g. `waiting for the database (…): connect ECONNREFUSED …`. */
  readonly waitingFor: () => string
  readonly metrics: HttpObserver
}): HttpApp => {
  const ops = createOpsApp({
    ready: async () => ({ ready: false, checks: { startup: options.waitingFor() } }),
    metrics: options.metrics,
  })
  return {
    maxBodyBytes: 0,
    async handle(req: HttpRequest): Promise<HttpResponse> {
      const path = req.url.split('?')[0]
      if (
        req.method === 'GET' &&
        (path === '/healthz' || path === '/readyz' || path === '/metrics')
      ) {
        return ops.handle(req)
      }
      return problem(
        { status: 503, code: 'starting', title: 'Starting', detail: options.waitingFor() },
        { 'retry-after': '1' },
      )
    },
  }
}
