import { closedLoop, rowBetween } from '../lib/harness.ts'
import type { ResultRow } from '../lib/harness.ts'
import { pgSql, runName } from '../lib/scenario.ts'
import type { Scenario } from '../lib/scenario.ts'

/** Concurrency of the raw claim-plus-done rate: one worker loop, and 64 for the ceiling. */
const SETTINGS = [1, 64] as const

/**
 * The naive exactly-once consumer's ceiling: per event, one transaction that claims (INSERT) and
 * marks done (UPDATE) one registry row.
 */
export const claimDone: Scenario = {
  name: 'claim-done',
  kind: 'baseline',
  summary:
    'raw single-row claim-plus-done: one INSERT + one UPDATE per event in one transaction (pg.ts, pool of 10), closed loop',
  async run(ctx) {
    const sql = pgSql(ctx, 'claim-done')
    const schema = runName(ctx, 'bench_claim', '_')
    ctx.track({ kind: 'schema', name: schema })
    const rows: ResultRow[] = []
    try {
      await sql.exec(
        `CREATE SCHEMA ${schema}; CREATE TABLE ${schema}.processed (handler text NOT NULL, event_id text NOT NULL, status text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (handler, event_id))`,
      )
      for (const c of SETTINGS) {
        let n = 0
        const r = await closedLoop(ctx, {
          concurrency: c,
          warmupMs: ctx.warmupMs,
          measureMs: ctx.measureMs,
          op: async () => {
            const id = `c${c}-${n++}`
            await sql.transaction(async (tx) => {
              await tx.query(
                `INSERT INTO ${schema}.processed (handler, event_id, status) VALUES ('bench', $1, 'processing')`,
                [id],
              )
              await tx.query(
                `UPDATE ${schema}.processed SET status = 'done', updated_at = now() WHERE handler = 'bench' AND event_id = $1`,
                [id],
              )
            })
          },
        })
        rows.push(
          rowBetween(r.before, r.after, {
            scenario: 'claim-done',
            variant: `c=${c}`,
            kind: 'baseline',
            events: r.events,
            latency: r.latency,
          }),
        )
      }
    } finally {
      await sql.close()
    }
    return rows
  },
}
