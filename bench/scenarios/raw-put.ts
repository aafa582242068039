import { countingStore } from '../lib/counting-store.ts'
import { closedLoop, rowBetween } from '../lib/harness.ts'
import type { ResultRow } from '../lib/harness.ts'
import { CONCURRENCY, payloads, runName, s3Store } from '../lib/scenario.ts'
import type { Scenario } from '../lib/scenario.ts'

const encoder = new TextEncoder()

/** The object store's ceiling: 1 KiB create-only PUTs through cairn's own S3 request path. */
export const rawPut: Scenario = {
  name: 'raw-put',
  kind: 'baseline',
  summary:
    '1 KiB create-only PUTs (If-None-Match: *) to MinIO through src/adapters/object-store/s3, closed loop',
  async run(ctx) {
    const bucket = runName(ctx, 'cairn-bench-raw')
    ctx.track({ kind: 'bucket', name: bucket })
    const s3 = await s3Store(bucket)
    const store = countingStore(s3)
    const next = payloads(ctx, 1)
    const rows: ResultRow[] = []
    try {
      for (const c of CONCURRENCY) {
        let n = 0
        const r = await closedLoop(ctx, {
          concurrency: c,
          warmupMs: ctx.warmupMs,
          measureMs: ctx.measureMs,
          store,
          op: async (client) => {
            const outcome = await store.putIfAbsent(
              `raw/c${c}/${client}/${String(n++).padStart(10, '0')}`,
              encoder.encode(next()),
              'application/octet-stream',
            )
            if (outcome !== 'created') throw new Error(`raw PUT answered ${outcome}`)
          },
        })
        rows.push(
          rowBetween(r.before, r.after, {
            scenario: 'raw-put',
            variant: `c=${c}`,
            kind: 'baseline',
            events: r.events,
            latency: r.latency,
          }),
        )
      }
    } finally {
      await store.close()
    }
    return rows
  },
}
