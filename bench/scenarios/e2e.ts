import { createBenchClass, openDeployment } from '../lib/cairn-deployment.ts'
import type { Deployment } from '../lib/cairn-deployment.ts'
import { closedLoop, openLoop, rowBetween } from '../lib/harness.ts'
import type { BenchContext, OpenLoopResult } from '../lib/harness.ts'
import { createOmsHttpClient } from '../lib/http-client.ts'
import type { OmsHttpClient } from '../lib/http-client.ts'
import { payloads, pgSql } from '../lib/scenario.ts'
import type { Scenario } from '../lib/scenario.ts'
import { createLatencyRecorder, nowNs, sleep } from '../lib/stats.ts'

/** Most ids per visibility query. */
const POLL_BATCH = 1_000
/** How long the acknowledged commands of the window may take to become visible. */
const DRAIN_MS = 60_000

/** The append ceiling this run measured (`append` at 64 clients), or a short measurement. */
const appendCeiling = async (
  ctx: BenchContext,
  client: OmsHttpClient,
  instances: string,
  deployment: Deployment,
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
      const res = await client.request('POST', instances, { id, data: { payload: next() } })
      if (res.status !== 202) throw new Error(`POST ${id}: ${res.status} ${res.text}`)
    },
  })
  return {
    rate: r.events / 3,
    source: 'a 3 s closed loop at 64 clients with the pipeline running (append not run)',
  }
}

/**
 * At half the append ceiling (an open loop by due time), the time from a command's 202 to its
 * instance being in the read model. The whole pipeline runs as separate processes in distributed
 * mode: `cairn oms`, `cairn publisher` (woken by the writers' PostgreSQL NOTIFY),
 * `cairn worker ontology instance` and `cairn worker projection`. Visibility is read from the
 * read-model table directly (batched by id), so detecting it does not load the OMS.
 */
export const e2e: Scenario = {
  name: 'e2e',
  kind: 'scenario',
  summary:
    'at 50 % of the append ceiling (open loop), command 202 → instance row in the read model; oms, publisher, command workers and projection as separate processes (distributed mode)',
  async run(ctx) {
    const deployment = openDeployment(ctx, 'e2e')
    const sql = pgSql(ctx, 'e2e-visibility')
    try {
      const [oms] = await Promise.all([
        deployment.start('oms', ['oms']),
        deployment.start('publisher', ['publisher']),
        deployment.start('worker-commands', ['worker', 'ontology', 'instance']),
        deployment.start('worker-projection', ['worker', 'projection']),
      ])
      const client = createOmsHttpClient(oms.url, deployment.token, 1_024)
      try {
        const db = 'bench'
        const classId = 'Item'
        const instances = await createBenchClass(client, db, classId)
        const ceiling = await appendCeiling(ctx, client, instances, deployment)
        const rate = Math.max(1, Math.round(ceiling.rate / 2))
        ctx.log(
          `  rate ${rate} commands/s (half of ${Math.round(ceiling.rate)} from ${ceiling.source})`,
        )

        const recorder = createLatencyRecorder()
        const acked = new Map<string, number>()
        let visible = 0
        let queries = 0
        let polling = true
        let pollError: unknown
        const poller = (async () => {
          const statement = `SELECT id FROM ${deployment.schema}.rm_instances WHERE db = $1 AND class_id = $2 AND id = ANY($3::text[])`
          while (polling) {
            if (acked.size === 0) {
              await sleep(1)
              continue
            }
            const ids = [...acked.keys()]
            for (let k = 0; k < ids.length; k += POLL_BATCH) {
              const found = await sql.query<{ id: string }>(statement, [
                db,
                classId,
                ids.slice(k, k + POLL_BATCH),
              ])
              queries++
              const t = nowNs()
              for (const { id } of found) {
                const at = acked.get(id)
                if (at === undefined) continue
                acked.delete(id)
                recorder.record(t - at)
                visible++
              }
            }
          }
        })().catch((error: unknown) => {
          pollError = error
        })
        const next = payloads(ctx, 10)
        let acknowledged = 0
        let r: OpenLoopResult
        try {
          r = await openLoop(ctx, {
            rate,
            warmupMs: ctx.warmupMs,
            measureMs: ctx.measureMs,
            maxInFlight: 1_024,
            processes: deployment.pids(),
            op: async (i, measured) => {
              const id = `e-${i}`
              const res = await client.request('POST', instances, {
                id,
                data: { payload: next() },
              })
              if (res.status !== 202) throw new Error(`POST ${id}: ${res.status} ${res.text}`)
              if (!measured) return
              acked.set(id, nowNs())
              acknowledged++
            },
          })
          const deadline = Date.now() + DRAIN_MS
          while (acked.size > 0 && Date.now() < deadline && pollError === undefined) await sleep(20)
        } finally {
          polling = false
          await poller
        }
        if (pollError !== undefined)
          throw pollError instanceof Error
            ? pollError
            : new Error('visibility polling failed', { cause: pollError })
        const unseen = acked.size
        const windowSeconds = (r.after.ns - r.before.ns) / 1e9
        return [
          rowBetween(r.before, r.after, {
            scenario: 'e2e',
            variant: `${rate}/s`,
            kind: 'scenario',
            events: acknowledged,
            latency: recorder.summary(),
            compareTo: ['append c=64'],
            notes: [
              'events/s: commands acknowledged (202) whose due time fell in the window, per second; latency: 202 → row in rm_instances (polled by id, batches of ≤ 1,000)',
              'CPU of each cairn process per acknowledged command: oms, publisher, worker-commands (ontology + instance), worker-projection',
              ...(unseen > 0 ? [`${unseen} acknowledged instances not visible within 60 s`] : []),
              ...(r.skipped > 0 ? [`${r.skipped} starts skipped (1,024 in flight)`] : []),
              ...(r.errors > 0 ? [`${r.errors} commands failed`] : []),
            ],
            extra: {
              targetRate: rate,
              ceiling,
              offered: r.started,
              acknowledged,
              visible,
              unseen,
              visibilityQueries: queries,
              offeredPerSecond: Math.round((r.started / windowSeconds) * 10) / 10,
            },
          }),
        ]
      } finally {
        client.close()
      }
    } finally {
      await deployment.close()
      await sql.close()
    }
  },
}
