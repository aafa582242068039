import { execFileSync } from 'node:child_process'
import os from 'node:os'
import type { ResultRow } from './harness.ts'

/** Fills each row's ratios to the rows it names in `compareTo` (throughput ÷ theirs). */
export const computeRatios = (rows: ResultRow[]): void => {
  const byKey = new Map(rows.map((r) => [`${r.scenario} ${r.variant}`, r]))
  for (const row of rows) {
    if (row.compareTo === undefined) continue
    const ratios: Record<string, number> = {}
    for (const key of row.compareTo) {
      const other = byKey.get(key)
      if (other !== undefined && other.throughput > 0) {
        ratios[key] = Math.round((row.throughput / other.throughput) * 100) / 100
      }
    }
    row.ratios = ratios
  }
}

export type Machine = {
  readonly nproc: number
  readonly cpuModel: string
  readonly memoryGiB: number
  readonly node: string
  readonly platform: string
  readonly commit: string
  readonly loadAverageAtStart: readonly number[]
}

export const describeMachine = (loadAverageAtStart: readonly number[]): Machine => {
  let commit = 'unknown'
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim()
  } catch {
    // Not a checkout: the commit stays unknown.
  }
  return {
    nproc: os.availableParallelism(),
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    commit,
    loadAverageAtStart,
  }
}

/** AWS S3 Standard list prices per 1,000 requests (us-east-1): PUT, COPY, POST, LIST; GET, HEAD. */
export const S3_PRICES = { putListPer1000: 0.005, getPer1000: 0.0004 } as const

/**
 * The S3 request cost of a million events of this row, in US dollars, at list prices: from
 * MinIO's own counts when read (every client of the server, cairn processes of their own
 * included), else from the counting store of the bench's own writer; null when neither is known.
 */
export const s3RequestCost = (r: ResultRow): number | null => {
  let putList: number
  let get: number
  const s = r.serverRequestsPerEvent
  const own = r.objectStorePerEvent
  if (s !== null && s !== undefined && Object.keys(s).length > 0) {
    // DELETEs are free; the bench's own clean-up is not in a measured window anyway.
    putList =
      (s.putobject ?? 0) + (s.copyobject ?? 0) + (s.listobjectsv2 ?? 0) + (s.listobjectsv1 ?? 0)
    get = (s.getobject ?? 0) + (s.headobject ?? 0)
  } else if (own !== null && own !== undefined) {
    putList = (own.put ?? 0) + (own.putIfMatch ?? 0) + (own.list ?? 0)
    get = own.get ?? 0
  } else {
    return null
  }
  const perMillion = 1_000_000 / 1_000
  const cost = perMillion * (putList * S3_PRICES.putListPer1000 + get * S3_PRICES.getPer1000)
  return Math.round(cost * 1000) / 1000
}

/** Fills each row's S3 request cost per million events. */
export const computeCosts = (rows: ResultRow[]): void => {
  for (const row of rows) row.s3CostPerMillionEvents = s3RequestCost(row)
}

const OWN_COLUMNS = new Set(['bench', 'postgres', 'kafka', 'minio'])

/** CPU µs per event of the cairn processes a scenario spawned (OMS, publisher, workers), summed. */
const cairnCpu = (r: ResultRow): number | undefined => {
  const own = Object.entries(r.cpuUsPerEvent).filter(([k]) => !OWN_COLUMNS.has(k))
  return own.length === 0 ? undefined : own.reduce((sum, [, v]) => sum + v, 0)
}

const fmt = (n: number | undefined, digits = 1): string =>
  n === undefined ? '' : n.toLocaleString('en-US', { maximumFractionDigits: digits })

/**
 * MinIO's own request counts per event (every client, including cairn processes of their own):
 * PUTs (create-only and conditional), GETs and LISTs; empty when its metrics were not read or the
 * row did not touch it.
 */
const serverColumn = (r: ResultRow): string => {
  const s = r.serverRequestsPerEvent
  if (s === null || s === undefined) return ''
  const put = s.putobject ?? 0
  const get = s.getobject ?? 0
  const list = (s.listobjectsv2 ?? 0) + (s.listobjectsv1 ?? 0)
  if (put + get + list === 0) return ''
  return [put, get, list].map((n) => fmt(n, 2)).join('/')
}

/** The results as a fixed-width text table. */
export const formatTable = (rows: readonly ResultRow[]): string => {
  const header = [
    'scenario',
    'variant',
    'events/s',
    'p50 ms',
    'p99 ms',
    'p99.9 ms',
    'cpu µs/ev bench',
    'cairn',
    'pg',
    'kafka',
    'minio',
    'store req/ev put',
    'get',
    'list',
    'minio put/get/list',
    'S3 $/M ev',
    'ratio',
  ]
  const lines = rows.map((r) => [
    r.scenario,
    r.variant,
    fmt(r.throughput, r.throughput < 10 ? 2 : 0),
    fmt(r.latency?.p50, 2),
    fmt(r.latency?.p99, 2),
    fmt(r.latency?.p999, 2),
    fmt(r.cpuUsPerEvent.bench, 0),
    fmt(cairnCpu(r), 0),
    fmt(r.cpuUsPerEvent.postgres, 0),
    fmt(r.cpuUsPerEvent.kafka, 0),
    fmt(r.cpuUsPerEvent.minio, 0),
    r.objectStorePerEvent === null
      ? ''
      : fmt((r.objectStorePerEvent.put ?? 0) + (r.objectStorePerEvent.putIfMatch ?? 0), 3),
    r.objectStorePerEvent === null ? '' : fmt(r.objectStorePerEvent.get, 3),
    r.objectStorePerEvent === null ? '' : fmt(r.objectStorePerEvent.list, 3),
    serverColumn(r),
    r.s3CostPerMillionEvents === null || r.s3CostPerMillionEvents === undefined
      ? ''
      : fmt(r.s3CostPerMillionEvents, 2),
    Object.entries(r.ratios ?? {})
      .map(([k, v]) => `${v}× ${k}`)
      .join(', '),
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] ?? '').length)))
  const render = (cells: readonly string[]): string =>
    cells
      .map((c, i) =>
        i < 2 || i === cells.length - 1 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0),
      )
      .join('  ')
      .trimEnd()
  return [render(header), ...lines.map(render)].join('\n')
}
