import type { Logger } from '../../src/core/ports/logger.ts'
import type { Resource } from './cleanup.ts'
import { diffCounts } from './counting-store.ts'
import type { CountingStore, RequestCounts } from './counting-store.ts'
import {
  sampleMinioRequests,
  sampleProcessCpu,
  sampleServiceCpu,
  SERVICE_NAMES,
} from './services.ts'
import type { ServiceName } from './services.ts'
import { createLatencyRecorder, nowNs, sleep } from './stats.ts'
import type { Latency, LatencyRecorder } from './stats.ts'

/** One measured line of the report: a scenario or a baseline at one setting. */
export type ResultRow = {
  readonly scenario: string
  readonly variant: string
  readonly kind: 'scenario' | 'baseline'
  readonly events: number
  readonly seconds: number
  /** Events (or requests, messages, transactions) per second. */
  readonly throughput: number
  readonly latency: Latency | null
  /** CPU µs per event: `bench` is this process; the services include other clients' load. */
  readonly cpuUsPerEvent: Readonly<Record<string, number>>
  /** Object-store requests per event by kind (only where cairn's store is in the path). */
  readonly objectStorePerEvent: Readonly<Record<string, number>> | null
  /**
   * MinIO's own count of requests per event by S3 API (every client of the server, cairn
   * processes of their own included), or null when its metrics could not be read.
   */
  readonly serverRequestsPerEvent: Readonly<Record<string, number>> | null
  /** `scenario variant` of the rows this one is compared to, its baseline first. */
  readonly compareTo?: readonly string[]
  readonly notes?: readonly string[]
  readonly extra?: Readonly<Record<string, unknown>>
  /** Throughput ÷ each compared row's throughput; filled in once every row is known. */
  ratios?: Record<string, number>
  /**
   * What the object-store requests of a million events would cost on AWS S3 at list prices
   * (`s3RequestCost`), in US dollars; null when no request count is known for the row.
   */
  s3CostPerMillionEvents?: number | null
}

export type BenchContext = {
  readonly quick: boolean
  readonly seed: number
  readonly runId: string
  readonly warmupMs: number
  readonly measureMs: number
  readonly aggregates: number
  readonly payloadBytes: number
  readonly pids: Partial<Record<ServiceName, number>>
  readonly logger: Logger
  /** Rows measured so far in this run (a scenario may size its load from an earlier one). */
  readonly rows: ResultRow[]
  log(line: string): void
  /**
   * Records a bucket, schema, database or topics of this run before it is created: the harness
   * removes them after the last scenario (also when the scenario failed), unless `--keep`.
   */
  track(resource: Resource): void
}

export type Snapshot = {
  readonly ns: number
  readonly cpu: NodeJS.CpuUsage
  readonly services: Partial<Record<ServiceName, number>>
  readonly counts: RequestCounts | null
  /** CPU µs of the cairn processes the scenario spawned, by name. */
  readonly processes: Readonly<Record<string, number>>
  /** MinIO's request counters by S3 API (every client), or null. */
  readonly server: Readonly<Record<string, number>> | null
}

/** Processes a scenario spawned (name → pid) whose CPU its rows report next to the services'. */
export type ProcessPids = Readonly<Record<string, number>>

export const snapshot = async (
  ctx: BenchContext,
  store?: CountingStore,
  processes: ProcessPids = {},
): Promise<Snapshot> => {
  // Reading /proc takes a few milliseconds: the snapshot's time is the middle of it.
  const start = nowNs()
  const cpu = process.cpuUsage()
  const counts = store === undefined ? null : store.counts()
  const [services, own, server] = await Promise.all([
    sampleServiceCpu(ctx.pids),
    sampleProcessCpu(processes),
    sampleMinioRequests(process.env.CAIRN_S3_ENDPOINT),
  ])
  return { ns: (start + nowNs()) / 2, cpu, services, counts, processes: own, server }
}

const round = (n: number, digits = 2): number => {
  const f = 10 ** digits
  return Math.round(n * f) / f
}

export type RowInput = {
  readonly scenario: string
  readonly variant: string
  readonly kind: 'scenario' | 'baseline'
  readonly events: number
  readonly latency: Latency | null
  readonly compareTo?: readonly string[]
  readonly notes?: readonly string[]
  readonly extra?: Readonly<Record<string, unknown>>
}

/** A result row from two snapshots around the measured window. */
export const rowBetween = (a: Snapshot, b: Snapshot, input: RowInput): ResultRow => {
  const seconds = (b.ns - a.ns) / 1e9
  const events = Math.max(input.events, 0)
  const per = (n: number): number => (events === 0 ? 0 : round(n / events, 3))
  const cpu: Record<string, number> = {
    bench: per(b.cpu.user - a.cpu.user + (b.cpu.system - a.cpu.system)),
  }
  for (const name of SERVICE_NAMES) {
    const after = b.services[name]
    const before = a.services[name]
    if (after !== undefined && before !== undefined) cpu[name] = per(after - before)
  }
  for (const [name, after] of Object.entries(b.processes)) {
    const before = a.processes[name]
    if (before !== undefined) cpu[name] = per(after - before)
  }
  let store: Record<string, number> | null = null
  if (a.counts !== null && b.counts !== null) {
    const d = diffCounts(b.counts, a.counts)
    store = {
      put: per(d.put),
      putIfMatch: per(d.putIfMatch),
      get: per(d.get),
      list: per(d.list),
    }
  }
  let server: Record<string, number> | null = null
  if (a.server !== null && b.server !== null) {
    server = {}
    for (const [api, after] of Object.entries(b.server)) {
      const n = after - (a.server[api] ?? 0)
      if (n > 0) server[api] = per(n)
    }
  }
  return {
    scenario: input.scenario,
    variant: input.variant,
    kind: input.kind,
    events,
    seconds: round(seconds, 3),
    throughput: round(seconds > 0 ? events / seconds : 0, 1),
    latency: input.latency,
    cpuUsPerEvent: cpu,
    objectStorePerEvent: store,
    serverRequestsPerEvent: server,
    ...(input.compareTo === undefined ? {} : { compareTo: input.compareTo }),
    ...(input.notes === undefined ? {} : { notes: input.notes }),
    ...(input.extra === undefined ? {} : { extra: input.extra }),
  }
}

export type ClosedLoopOptions = {
  readonly concurrency: number
  readonly warmupMs: number
  readonly measureMs: number
  /** One operation of client `client`; its latency is recorded when it completes in the window. */
  readonly op: (client: number) => Promise<void>
  readonly store?: CountingStore
  readonly processes?: ProcessPids
}

export type LoopResult = {
  readonly before: Snapshot
  readonly after: Snapshot
  readonly events: number
  readonly latency: Latency
  readonly errors: number
}

/**
 * `concurrency` clients each run `op` back to back (a closed loop). After the warm-up the window
 * opens: operations started inside it and completed before it closes are counted and their
 * latencies recorded. Operations in flight when it closes are awaited, not counted.
 */
export const closedLoop = async (ctx: BenchContext, o: ClosedLoopOptions): Promise<LoopResult> => {
  let phase: 'warmup' | 'measure' | 'stop' = 'warmup'
  let events = 0
  let errors = 0
  let firstError: unknown
  const recorder: LatencyRecorder = createLatencyRecorder()
  const client = async (k: number): Promise<void> => {
    while (phase !== 'stop') {
      const counted = phase === 'measure'
      const t = nowNs()
      try {
        await o.op(k)
      } catch (error) {
        errors++
        firstError ??= error
        if (errors > 100) throw error
        continue
      }
      if (counted && phase === 'measure') {
        events++
        recorder.record(nowNs() - t)
      }
    }
  }
  const clients = Array.from({ length: o.concurrency }, (_, k) => client(k))
  const all = Promise.all(clients)
  const failed = all.then(
    () => undefined,
    (error: unknown) => error,
  )
  await Promise.race([sleep(o.warmupMs), failed])
  const before = await snapshot(ctx, o.store, o.processes)
  phase = 'measure'
  await Promise.race([sleep(o.measureMs), failed])
  phase = 'stop'
  const after = await snapshot(ctx, o.store, o.processes)
  await all
  if (errors > 0) ctx.log(`  ${errors} operations failed; first: ${String(firstError)}`)
  return { before, after, events, latency: recorder.summary(), errors }
}

export type OpenLoopOptions = {
  /** Operations started per second. */
  readonly rate: number
  readonly warmupMs: number
  readonly measureMs: number
  /** Most operations in flight; a start that would exceed it is skipped and counted. */
  readonly maxInFlight: number
  /** Operation number `i`; `measured` tells whether it started inside the window. */
  readonly op: (i: number, measured: boolean) => Promise<void>
  readonly store?: CountingStore
  readonly processes?: ProcessPids
}

export type OpenLoopResult = {
  readonly before: Snapshot
  readonly after: Snapshot
  /** Operations started inside the window. */
  readonly started: number
  readonly skipped: number
  readonly errors: number
}

/** Starts operations at a fixed rate regardless of completions (an open loop). */
export const openLoop = async (ctx: BenchContext, o: OpenLoopOptions): Promise<OpenLoopResult> => {
  let inFlight = 0
  let skipped = 0
  let errors = 0
  let firstError: unknown
  let i = 0
  let started = 0
  const pending = new Set<Promise<void>>()
  const t0 = nowNs()
  const warmEnd = t0 + o.warmupMs * 1e6
  let before: Snapshot | undefined
  let end = Number.POSITIVE_INFINITY
  // Operation i is due at t0 + i / rate; it is measured when that time falls inside the window,
  // however late a busy event loop starts it.
  const dueAt = (n: number): number => t0 + (n / o.rate) * 1e9
  for (;;) {
    const now = nowNs()
    if (now >= end) break
    if (before === undefined && now >= warmEnd) {
      before = await snapshot(ctx, o.store, o.processes)
      end = before.ns + o.measureMs * 1e6
    }
    const due = Math.floor(((now - t0) / 1e9) * o.rate)
    while (i < due) {
      i++
      const at = dueAt(i)
      const measured = before !== undefined && at >= before.ns && at < end
      if (inFlight >= o.maxInFlight) {
        skipped++
        continue
      }
      if (measured) started++
      inFlight++
      const p = o
        .op(i, measured)
        .catch((error: unknown) => {
          errors++
          firstError ??= error
        })
        .finally(() => {
          inFlight--
          pending.delete(p)
        })
      pending.add(p)
    }
    await sleep(2)
  }
  const after = await snapshot(ctx, o.store, o.processes)
  await Promise.all(pending)
  if (errors > 0) ctx.log(`  ${errors} operations failed; first: ${String(firstError)}`)
  return { before: before ?? after, after, started, skipped, errors }
}
