import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { HttpObserver } from '../../http/app.ts'

/** Numbers a component reports when scraped (publisher and worker metrics). */
export type MetricsSource = {
  readonly component: string
  readonly labels?: Readonly<Record<string, string>>
  read(): Readonly<Record<string, number | string>>
}

export type PrometheusMetrics = HttpObserver & {
  /** Exposes a component's counters as `cairn_<component>_<name>` series, read at scrape time. */
  addSource(source: MetricsSource): void
}

const snake = (s: string): string => s.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toLowerCase()

/**
 * Prometheus metrics of one process (`/metrics`): process defaults, HTTP requests by route and
 * status, and each component's own numbers (publisher lag and counts, worker outcomes).
 */
export const createPrometheusMetrics = (): PrometheusMetrics => {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'cairn_' })
  const requests = new Counter({
    name: 'cairn_http_requests_total',
    help: 'HTTP requests by route pattern, method and status',
    labelNames: ['route', 'method', 'status'] as const,
    registers: [registry],
  })
  const duration = new Histogram({
    name: 'cairn_http_request_duration_seconds',
    help: 'HTTP request duration by route pattern and method',
    labelNames: ['route', 'method'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  })
  const sources: MetricsSource[] = []
  const gauges = new Map<string, Gauge>()
  const gauge = (name: string, labelNames: string[]): Gauge => {
    let g = gauges.get(name)
    if (g === undefined) {
      g = new Gauge({ name, help: `cairn ${name}`, labelNames, registers: [registry] })
      gauges.set(name, g)
    }
    return g
  }
  return {
    observe(route, method, status, seconds) {
      requests.inc({ route, method, status: String(status) })
      duration.observe({ route, method }, seconds)
    },
    addSource(source) {
      sources.push(source)
    },
    async render() {
      for (const s of sources) {
        const labels = { ...s.labels }
        for (const [k, v] of Object.entries(s.read())) {
          if (typeof v === 'number') {
            gauge(`cairn_${snake(s.component)}_${snake(k)}`, Object.keys(labels)).set(labels, v)
          } else {
            // An info series: only the current value is present.
            const g = gauge(`cairn_${snake(s.component)}_${snake(k)}_info`, [
              ...Object.keys(labels),
              'value',
            ])
            g.reset()
            g.set({ ...labels, value: v }, 1)
          }
        }
      }
      return { contentType: registry.contentType, body: await registry.metrics() }
    },
  }
}
