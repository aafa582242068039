import { closedLoop, rowBetween } from '../lib/harness.ts'
import type { ResultRow } from '../lib/harness.ts'
import { CONCURRENCY, payloads, pgSql, runName } from '../lib/scenario.ts'
import type { Scenario } from '../lib/scenario.ts'

/** PostgreSQL's ceiling for single-row transactions (synchronous_commit on). */
export const pgInsert: Scenario = {
  name: 'pg-insert',
  kind: 'baseline',
  summary:
    'single-row transactions: one autocommit INSERT of a 1 KiB row each, through src/adapters/sql/pg.ts (pool of 10), closed loop',
  async run(ctx) {
    const sql = pgSql(ctx, 'pg-insert')
    const schema = runName(ctx, 'bench_pg', '_')
    ctx.track({ kind: 'schema', name: schema })
    const rows: ResultRow[] = []
    try {
      const sc = await sql.query<{ synchronous_commit: string }>('SHOW synchronous_commit')
      if (sc[0]?.synchronous_commit !== 'on') {
        throw new Error(`synchronous_commit is ${sc[0]?.synchronous_commit}, the bench needs on`)
      }
      await sql.exec(
        `CREATE SCHEMA ${schema}; CREATE TABLE ${schema}.rows (id bigserial PRIMARY KEY, client int NOT NULL, body text NOT NULL)`,
      )
      const next = payloads(ctx, 2)
      for (const c of CONCURRENCY) {
        const r = await closedLoop(ctx, {
          concurrency: c,
          warmupMs: ctx.warmupMs,
          measureMs: ctx.measureMs,
          op: async (client) => {
            await sql.query(`INSERT INTO ${schema}.rows (client, body) VALUES ($1, $2)`, [
              client,
              next(),
            ])
          },
        })
        rows.push(
          rowBetween(r.before, r.after, {
            scenario: 'pg-insert',
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
