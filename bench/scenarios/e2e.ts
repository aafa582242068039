import type { Sql } from '../../src/core/ports/sql.ts'
import { createBenchClass, openDeployment } from '../lib/cairn-deployment.ts'
import type { BenchClass, Deployment } from '../lib/cairn-deployment.ts'
import { closedLoop, openLoop, rowBetween } from '../lib/harness.ts'
import type { Latency } from '../lib/stats.ts'
import type { BenchContext, OpenLoopResult, ResultRow } from '../lib/harness.ts'
import { createBenchClient } from '../lib/http-client.ts'
import type { BenchClient } from '../lib/http-client.ts'
import { payloads, pgSql } from '../lib/scenario.ts'
import type { Scenario } from '../lib/scenario.ts'
import { createLatencyRecorder, nowNs, sleep } from '../lib/stats.ts'

/** Most ids per visibility query. */
const POLL_BATCH = 1_000
/**
 * Visibility comes from a notification sent by a trigger on the read-model table when the row's
 * transaction commits; a query by id every so often catches what a notification missed (LISTEN
 * is best effort), timed when that query saw it.
 */
const POLL_PAUSE_MS = 250
/**
 * After the window, the wait for its commands to become visible ends when none became visible for
 * `STALL_MS`, or after `DRAIN_CAP_MS` in all (an overloaded pipeline drains its backlog slowly).
 */
const STALL_MS = 20_000
const DRAIN_CAP_MS = 600_000

/** Series of the pipeline's processes sampled once a second, to see where a backlog waits. */
const STAGES = {
  published: ['publisher', /^cairn_publisher_published (\S+)$/m],
  segmentReads: ['publisher', /^cairn_publisher_segment_reads (\S+)$/m],
  publisherLagMs: ['publisher', /^cairn_publisher_lag_ms (\S+)$/m],
  commandsDone: ['worker-commands', /^cairn_worker_processed\{handler="instance_worker"\} (\S+)$/m],
  projected: [
    'worker-projection',
    /^cairn_worker_processed\{handler="projection_worker"\} (\S+)$/m,
  ],
} as const

type StageSample = { t: number; acknowledged: number; visible: number } & Partial<
  Record<keyof typeof STAGES, number>
>

const sampleStages = async (
  urls: Readonly<Record<string, string>>,
): Promise<Partial<Record<keyof typeof STAGES, number>>> => {
  const texts = new Map<string, string>()
  await Promise.all(
    Object.entries(urls).map(async ([name, url]) => {
      try {
        const r = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(2_000) })
        texts.set(name, await r.text())
      } catch {
        // A missed sample leaves a gap in the timeline.
      }
    }),
  )
  const out: Partial<Record<keyof typeof STAGES, number>> = {}
  for (const [key, [process, re]] of Object.entries(STAGES)) {
    const m = re.exec(texts.get(process) ?? '')
    if (m?.[1] !== undefined) out[key as keyof typeof STAGES] = Number(m[1])
  }
  return out
}

/** The append ceiling this run measured (`append` at 64 clients), or a short measurement. */
const appendCeiling = async (
  ctx: BenchContext,
  client: BenchClient,
  instances: BenchClass,
  deployment: Deployment,
  created: { n: number },
): Promise<{ rate: number; source: string }> => {
  const row = ctx.rows.find((r) => r.scenario === 'append' && r.variant === 'c=64')
  if (row !== undefined && row.throughput > 0)
    return { rate: row.throughput, source: 'append c=64' }
  const next = payloads(ctx, 9)
  let n = 0
  const r = await closedLoop(ctx, {
    concurrency: 64,
    warmupMs: 1_000,
    measureMs: 3_000,
    processes: deployment.pids(),
    op: async () => {
      const id = `ceiling-${n++}`
      await client.createInstance({ params: instances, body: { id, data: { payload: next() } } })
      created.n++
    },
  })
  return {
    rate: r.events / 3,
    source: 'a 3 s closed loop at 64 clients with the pipeline running (append not run)',
  }
}

type Pipeline = {
  readonly client: BenchClient
  readonly instances: BenchClass
  readonly sql: Sql
  readonly deployment: Deployment
  readonly db: string
  readonly classId: string
  readonly metricsUrls: Readonly<Record<string, string>>
  /** Instances acknowledged (202) so far, of every loop. */
  readonly created: { n: number }
  /** Called with an instance id when its row's transaction commits (the bench's trigger). */
  readonly visibility: { onRow: ((id: string) => void) | undefined }
}

/**
 * A trigger on the read-model table that notifies `channel` with each new instance's id, sent when
 * its transaction commits: the moment it becomes visible, without polling PostgreSQL for it. It
 * adds a `pg_notify` per row to the projection's transaction (bench only).
 */
const notifyVisibility = async (
  p: Pick<Pipeline, 'sql' | 'deployment' | 'visibility'>,
  channel: string,
): Promise<() => Promise<void>> => {
  const schema = p.deployment.schema
  await p.sql.exec(
    `CREATE OR REPLACE FUNCTION ${schema}.bench_row_visible() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN PERFORM pg_notify('${channel}', NEW.id); RETURN NULL; END $$;
     CREATE TRIGGER bench_row_visible AFTER INSERT ON ${schema}.rm_instances
       FOR EACH ROW EXECUTE FUNCTION ${schema}.bench_row_visible();`,
  )
  if (p.sql.listen === undefined) throw new Error('e2e needs LISTEN (PostgreSQL)')
  return p.sql.listen(channel, (id) => p.visibility.onRow?.(id))
}

type Measured = { readonly row: ResultRow; readonly visibleRate: number }

/**
 * Where the time goes: from the 202 to the command worker's decision (the domain event's
 * `occurred_at`, kept as the row's `created_at`: the command published, consumed, claimed and
 * decided) and from there to the row (the domain event appended, published, consumed and
 * projected). Wall clocks of one machine, millisecond resolution.
 */
const splitAtDecision = async (
  p: Pipeline,
  ackedAtMs: ReadonlyMap<string, number>,
  visibleAtMs: ReadonlyMap<string, number>,
): Promise<{ toDecision: Latency; decisionToRow: Latency }> => {
  const toDecision = createLatencyRecorder()
  const decisionToRow = createLatencyRecorder()
  const ids = [...ackedAtMs.keys()]
  for (let k = 0; k < ids.length; k += POLL_BATCH) {
    const rows = await p.sql.query<{ id: string; created: Date; seen: Date }>(
      `SELECT id, created_at AS created, updated_at AS seen FROM ${p.deployment.schema}.rm_instances
        WHERE db = $1 AND class_id = $2 AND id = ANY($3::text[])`,
      [p.db, p.classId, ids.slice(k, k + POLL_BATCH)],
    )
    for (const row of rows) {
      const acked = ackedAtMs.get(row.id)
      if (acked === undefined) continue
      toDecision.record(Math.max(0, row.created.getTime() - acked) * 1e6)
      const visibleAt = visibleAtMs.get(row.id)
      if (visibleAt !== undefined)
        decisionToRow.record(Math.max(0, visibleAt - row.created.getTime()) * 1e6)
    }
  }
  return { toDecision: toDecision.summary(), decisionToRow: decisionToRow.summary() }
}

/**
 * Waits until every instance acknowledged so far is in the read model (at most 5 minutes), and
 * reports how fast the pipeline drained what was waiting: its throughput with a full queue.
 */
const drain = async (
  ctx: BenchContext,
  p: Pipeline,
): Promise<{ commands: number; seconds: number; perSecond: number }> => {
  const started = Date.now()
  const count = async (): Promise<number> => {
    const [row] = await p.sql.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM ${p.deployment.schema}.rm_instances WHERE db = $1 AND class_id = $2`,
      [p.db, p.classId],
    )
    return row?.n ?? 0
  }
  const at0 = await count()
  let seen = at0
  while (seen < p.created.n && Date.now() - started < 300_000) {
    await sleep(100)
    seen = await count()
  }
  const seconds = (Date.now() - started) / 1000
  const commands = seen - at0
  const perSecond = seconds > 0.5 ? Math.round((commands / seconds) * 10) / 10 : 0
  ctx.log(
    `  pipeline idle: ${commands} waiting commands became visible in ${seconds.toFixed(1)} s${perSecond > 0 ? ` (${perSecond}/s)` : ''}${seen < p.created.n ? `; ${p.created.n - seen} still missing after 5 minutes` : ''}`,
  )
  return { commands, seconds, perSecond }
}

/**
 * An open loop at `rate` commands/s (by due time); the commands due in the window are tracked
 * from their 202 until their instance row exists (polled by id in batches). Returns the row and
 * the rate at which acknowledged commands became visible.
 */
const measureAt = async (
  ctx: BenchContext,
  p: Pipeline,
  rate: number,
  variant: string,
  idPrefix: string,
  salt: number,
  extraNotes: readonly string[],
  extra: Readonly<Record<string, unknown>>,
): Promise<Measured> => {
  const recorder = createLatencyRecorder()
  const acked = new Map<string, number>()
  /** Wall-clock time of each tracked 202, to split the latency at the command's decision. */
  const ackedAtMs = new Map<string, number>()
  const visibleAtMs = new Map<string, number>()
  let visible = 0
  let firstAck = 0
  let lastVisible = 0
  let queries = 0
  let polling = true
  let pollError: unknown
  const markVisible = (id: string, t: number): void => {
    const at = acked.get(id)
    if (at === undefined) return
    acked.delete(id)
    visibleAtMs.set(id, Date.now())
    recorder.record(Math.max(0, t - at))
    visible++
    lastVisible = t
  }
  /** Rows whose notification came before the harness had their 202 in hand. */
  const early = new Map<string, number>()
  p.visibility.onRow = (id) => {
    const t = nowNs()
    if (acked.has(id)) markVisible(id, t)
    else if (early.size < 100_000) early.set(id, t)
  }
  const statement = `SELECT id FROM ${p.deployment.schema}.rm_instances WHERE db = $1 AND class_id = $2 AND id = ANY($3::text[])`
  const poller = (async () => {
    while (polling) {
      if (acked.size === 0) {
        await sleep(POLL_PAUSE_MS)
        continue
      }
      const ids = [...acked.keys()]
      for (let k = 0; k < ids.length; k += POLL_BATCH) {
        const found = await p.sql.query<{ id: string }>(statement, [
          p.db,
          p.classId,
          ids.slice(k, k + POLL_BATCH),
        ])
        queries++
        const t = nowNs()
        for (const { id } of found) markVisible(id, t)
      }
      await sleep(POLL_PAUSE_MS)
    }
  })().catch((error: unknown) => {
    pollError = error
  })
  const next = payloads(ctx, salt)
  let acknowledged = 0
  const timeline: StageSample[] = []
  const t0 = Date.now()
  let sampling = true
  const sampler = (async () => {
    while (sampling) {
      const stages = await sampleStages(p.metricsUrls)
      timeline.push({ t: (Date.now() - t0) / 1000, acknowledged, visible, ...stages })
      await sleep(1_000)
    }
  })()
  let r: OpenLoopResult
  try {
    r = await openLoop(ctx, {
      rate,
      warmupMs: ctx.warmupMs,
      measureMs: ctx.measureMs,
      maxInFlight: 1_024,
      processes: p.deployment.pids(),
      op: async (i, measured) => {
        const id = `${idPrefix}-${i}`
        await p.client.createInstance({
          params: p.instances,
          body: { id, data: { payload: next() } },
        })
        p.created.n++
        if (!measured) return
        const t = nowNs()
        if (firstAck === 0) firstAck = t
        acked.set(id, t)
        ackedAtMs.set(id, Date.now())
        acknowledged++
        const seen = early.get(id)
        if (seen !== undefined) {
          early.delete(id)
          markVisible(id, seen)
        }
      },
    })
    const cap = Date.now() + DRAIN_CAP_MS
    let seen = visible
    let progressAt = Date.now()
    while (acked.size > 0 && pollError === undefined) {
      const now = Date.now()
      if (visible > seen) {
        seen = visible
        progressAt = now
      }
      if (now - progressAt > STALL_MS || now > cap) break
      await sleep(20)
    }
  } finally {
    polling = false
    sampling = false
    p.visibility.onRow = undefined
    await Promise.all([poller, sampler])
  }
  if (pollError !== undefined)
    throw pollError instanceof Error
      ? pollError
      : new Error('visibility polling failed', { cause: pollError })
  // Not visible when the wait ended: counted with the time waited so far, so the percentiles
  // are lower bounds rather than silently leaving out the slowest commands.
  const unseen = acked.size
  const end = nowNs()
  for (const at of acked.values()) recorder.record(end - at)
  const stages = await splitAtDecision(p, ackedAtMs, visibleAtMs)
  // The publisher's own count of segments it had to read (GETs), over the loop and its drain.
  const first = timeline.find((x) => x.published !== undefined && x.segmentReads !== undefined)
  const last = timeline.findLast((x) => x.published !== undefined && x.segmentReads !== undefined)
  const published = (last?.published ?? 0) - (first?.published ?? 0)
  const segmentReads = (last?.segmentReads ?? 0) - (first?.segmentReads ?? 0)
  const windowSeconds = (r.after.ns - r.before.ns) / 1e9
  const visibleRate =
    visible > 1 && lastVisible > firstAck ? visible / ((lastVisible - firstAck) / 1e9) : 0
  const row = rowBetween(r.before, r.after, {
    scenario: 'e2e',
    variant,
    kind: 'scenario',
    events: acknowledged,
    latency: recorder.summary(),
    compareTo: ['append c=64'],
    notes: [
      'events/s: commands acknowledged (202) whose due time fell in the window, per second; latency: 202 → row in rm_instances, seen when its transaction commits (a NOTIFY per row from a bench trigger; a query by id every 250 ms catches missed notifications)',
      'CPU of each cairn process per acknowledged command: oms, publisher, worker-commands (ontology + instance), worker-projection',
      ...extraNotes,
      ...(unseen > 0
        ? [
            `${unseen} acknowledged instances not visible when the wait ended (stalled 20 s, or 600 s in all): counted with the time waited, so the percentiles are lower bounds`,
          ]
        : []),
      ...(r.skipped > 0 ? [`${r.skipped} starts skipped (1,024 in flight)`] : []),
      ...(r.errors > 0 ? [`${r.errors} commands failed`] : []),
    ],
    extra: {
      ...extra,
      targetRate: rate,
      offered: r.started,
      offeredPerSecond: Math.round((r.started / windowSeconds) * 10) / 10,
      acknowledged,
      visible,
      unseen,
      visibleRatePerSecond: Math.round(visibleRate * 10) / 10,
      visibilityQueries: queries,
      publisher: {
        published,
        segmentReads,
        segmentReadsPerPublished:
          published > 0 ? Math.round((segmentReads / published) * 1000) / 1000 : null,
      },
      stages,
      timeline,
    },
  })
  ctx.log(
    `  ${variant}: 202 → decision p50 ${stages.toDecision.p50} ms, p99 ${stages.toDecision.p99} ms; decision → row p50 ${stages.decisionToRow.p50} ms, p99 ${stages.decisionToRow.p99} ms`,
  )
  ctx.log(
    `  ${variant}: ${acknowledged} acknowledged in the window, visible at ${Math.round(visibleRate * 10) / 10}/s from the first acknowledgement`,
  )
  ctx.log(
    `  ${variant}: the publisher published ${published} events and read ${segmentReads} segments (GETs) meanwhile`,
  )
  return { row, visibleRate }
}

/** Clients of the waiting and polling loops, and the polling interval. */
const OUTCOME_CLIENTS = 4
const POLL_EVERY_MS = 50

/**
 * A client that wants a command's outcome, with the typed client (`cairn/client`): it either
 * sends the command with `Prefer: wait` and gets the outcome in the answer (`wait`), or takes the
 * 202 and asks for the status every 50 ms until it is COMPLETED or FAILED (`poll`). Latency is
 * from sending to holding the outcome; a closed loop of 4 clients.
 */
const outcomeLatency = async (
  ctx: BenchContext,
  p: Pipeline,
  omsUrl: string,
  mode: 'wait' | 'poll',
): Promise<ResultRow> => {
  const oms = createBenchClient(omsUrl, p.deployment.token, OUTCOME_CLIENTS)
  const next = payloads(ctx, mode === 'wait' ? 21 : 22)
  const params = p.instances
  let n = 0
  let requests = 0
  const r = await closedLoop(ctx, {
    concurrency: OUTCOME_CLIENTS,
    warmupMs: 1_000,
    measureMs: ctx.quick ? 4_000 : 10_000,
    processes: p.deployment.pids(),
    op: async () => {
      const body = { id: `${mode}-${n++}`, data: { payload: next() } }
      requests++
      if (mode === 'wait') {
        const answer = await oms.createInstance({ params, body, waitSeconds: 30 })
        if (answer.status === 200) return
        if ('command_id' in answer.body) await oms.waitForCommand(answer.body.command_id)
        return
      }
      const answer = await oms.createInstance({ params, body })
      if (!('command_id' in answer.body)) throw new Error('no command id in the answer')
      const id = answer.body.command_id
      for (;;) {
        await sleep(POLL_EVERY_MS)
        requests++
        const status = await oms.getCommand({ params: { command_id: id } })
        if (status.body.status === 'COMPLETED' || status.body.status === 'FAILED') return
      }
    },
  }).finally(() => oms.close())
  p.created.n += n
  ctx.log(
    `  outcome by ${mode === 'wait' ? 'Prefer: wait' : 'polling'}: p50 ${r.latency.p50} ms, p99 ${r.latency.p99} ms, ${Math.round((requests / Math.max(n, 1)) * 10) / 10} requests per command`,
  )
  return rowBetween(r.before, r.after, {
    scenario: 'e2e',
    variant:
      mode === 'wait' ? 'outcome, Prefer: wait' : `outcome, polling every ${POLL_EVERY_MS} ms`,
    kind: 'scenario',
    events: r.events,
    latency: r.latency,
    notes: [
      `latency: a client sends a command and holds its outcome (COMPLETED, the read model shows it), through cairn/client; ${OUTCOME_CLIENTS} clients in a closed loop`,
      mode === 'wait'
        ? 'the command is sent with Prefer: wait=30: the OMS answers 200 with the outcome'
        : `the 202's status is asked for every ${POLL_EVERY_MS} ms until it is COMPLETED or FAILED`,
    ],
    extra: { requestsPerCommand: Math.round((requests / Math.max(n, 1)) * 100) / 100 },
  })
}

/** Commands/s of the light-load loop: well within what the pipeline keeps up with on 2 cores. */
const LIGHT_RATE = 20

/**
 * The time from a command's 202 to its instance being in the read model. The whole pipeline runs
 * as separate processes in distributed mode: `cairn oms`, `cairn publisher` (woken by the
 * writers' PostgreSQL NOTIFY), `cairn worker ontology instance` and `cairn worker projection`.
 * Visibility is the commit of the instance's row, notified by a trigger the bench adds to the
 * read-model table (with a slow query by id as a safety net), so detecting it loads neither the
 * OMS nor PostgreSQL with polling. Three open loops, each from an idle pipeline: a light load
 * (`LIGHT_RATE`), at half the append ceiling (issue 7's setting), then at half the pipeline's
 * drain rate (how fast it worked off the backlog the ceiling's closed loop left), i.e. a load the
 * pipeline sustains.
 */
export const e2e: Scenario = {
  name: 'e2e',
  kind: 'scenario',
  summary:
    'command 202 → instance row in the read model, open loop at a light 20/s, at 50 % of the append ceiling and at 50 % of the rate the pipeline drained; oms, publisher, command workers and projection as separate processes (distributed mode)',
  async run(ctx) {
    const deployment = openDeployment(ctx, 'e2e')
    const sql = pgSql(ctx, 'e2e-visibility')
    try {
      const [oms, publisher, commands, projection] = await Promise.all([
        deployment.start('oms', ['oms']),
        deployment.start('publisher', ['publisher']),
        deployment.start('worker-commands', ['worker', 'ontology', 'instance']),
        deployment.start('worker-projection', ['worker', 'projection']),
      ])
      const client = createBenchClient(oms.url, deployment.token, 1_024)
      try {
        const db = 'bench'
        const classId = 'Item'
        const instances = await createBenchClass(client, db, classId)
        const pipeline: Pipeline = {
          client,
          instances,
          sql,
          deployment,
          db,
          classId,
          metricsUrls: {
            publisher: publisher.url,
            'worker-commands': commands.url,
            'worker-projection': projection.url,
          },
          created: { n: 0 },
          visibility: { onRow: undefined },
        }
        const unlisten = await notifyVisibility(
          pipeline,
          `bench_visible_${ctx.runId}`.toLowerCase().replace(/[^a-z0-9_]/g, '_'),
        )
        try {
          // Light load first, from an idle pipeline: the latency of the path itself, with the
          // machine mostly idle (nothing queues for CPU).
          const light = await measureAt(
            ctx,
            pipeline,
            LIGHT_RATE,
            `${LIGHT_RATE}/s light`,
            'l',
            12,
            [`offered: a fixed light load (${LIGHT_RATE}/s), the path's own latency`],
            {},
          )
          const waited = await outcomeLatency(ctx, pipeline, oms.url, 'wait')
          const polled = await outcomeLatency(ctx, pipeline, oms.url, 'poll')
          const ceiling = await appendCeiling(ctx, client, instances, deployment, pipeline.created)
          // The ceiling's closed loop leaves a backlog: each open loop starts from an idle pipeline.
          const backlog = await drain(ctx, pipeline)
          const rate = Math.max(1, Math.round(ceiling.rate / 2))
          ctx.log(
            `  rate ${rate} commands/s (half of ${Math.round(ceiling.rate)} from ${ceiling.source})`,
          )
          const first = await measureAt(
            ctx,
            pipeline,
            rate,
            `${rate}/s`,
            'e',
            10,
            [`offered: 50 % of the append ceiling (${ceiling.source})`],
            { ceiling, backlog },
          )
          await drain(ctx, pipeline)
          // The pipeline's throughput: how fast it drained the ceiling's backlog (else how fast the
          // first loop's commands became visible).
          const drained =
            backlog.perSecond > 0 ? backlog.perSecond : Math.min(first.visibleRate, rate)
          const sustainable = Math.max(1, Math.round(drained / 2))
          ctx.log(`  rate ${sustainable} commands/s (half of the ${Math.round(drained)}/s drained)`)
          const second = await measureAt(
            ctx,
            pipeline,
            sustainable,
            `${sustainable}/s sustained`,
            's',
            11,
            [`offered: 50 % of the pipeline's drain rate (${Math.round(drained * 10) / 10}/s)`],
            { drainedRate: drained },
          )
          return [light.row, waited, polled, first.row, second.row]
        } finally {
          await unlisten()
        }
      } finally {
        client.close()
      }
    } finally {
      await deployment.close()
      await sql.close()
    }
  },
}
