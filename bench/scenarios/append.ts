import { countWrittenObjects, createBenchClass, openDeployment } from '../lib/cairn-deployment.ts'
import { closedLoop, rowBetween } from '../lib/harness.ts'
import type { ResultRow } from '../lib/harness.ts'
import { createBenchClient } from '../lib/http-client.ts'
import { CONCURRENCY, payloads, s3Store } from '../lib/scenario.ts'
import type { Scenario } from '../lib/scenario.ts'

/**
 * Single-event commands through the OMS's HTTP API, against `cairn oms` in a process of its own
 * in distributed mode (MinIO, PostgreSQL, Kafka of the run). Every command creates a new instance
 * (`POST …/instances` with its own id and a 1 KiB `data.payload`), so each is a new aggregate and
 * carries the create's implicit `expected_seq` 0: no read before the append, no OCC retries. The
 * publisher and the workers only run to set up the database and class (both COMPLETED), and are
 * stopped before the measurement: the rows measure the command path alone.
 */
export const append: Scenario = {
  name: 'append',
  kind: 'scenario',
  summary:
    'single-event commands over HTTP (POST …/instances, 1 KiB data, each a new instance) to `cairn oms` in its own process on MinIO + PostgreSQL + Kafka, keep-alive, closed loop',
  async run(ctx) {
    const deployment = openDeployment(ctx, 'append')
    const rows: ResultRow[] = []
    try {
      const [oms] = await Promise.all([
        deployment.start('oms', ['oms']),
        deployment.start('publisher', ['publisher']),
        deployment.start('worker-ontology', ['worker', 'ontology']),
        deployment.start('worker-projection', ['worker', 'projection']),
      ])
      const setup = createBenchClient(oms.url, deployment.token, 1)
      const instances = await createBenchClass(setup, 'bench', 'Item').finally(() => setup.close())
      await deployment.stop('publisher', 'worker-ontology', 'worker-projection')
      const bucket = await s3Store(deployment.bucket)
      try {
        const next = payloads(ctx, 8)
        for (const c of CONCURRENCY) {
          const client = createBenchClient(oms.url, deployment.token, c)
          let n = 0
          let acknowledged = 0
          const objectsBefore = await countWrittenObjects(bucket)
          const r = await closedLoop(ctx, {
            concurrency: c,
            warmupMs: ctx.warmupMs,
            measureMs: ctx.measureMs,
            processes: deployment.pids(),
            op: async () => {
              const id = `c${c}-${n++}`
              await client.createInstance({
                params: instances,
                body: { id, data: { payload: next() } },
              })
              acknowledged++
            },
          }).finally(() => client.close())
          // Every command of the loop (warm-up included) has been answered: the objects it made
          // are all in the bucket now.
          const puts = (await countWrittenObjects(bucket)) - objectsBefore
          const row = rowBetween(r.before, r.after, {
            scenario: 'append',
            variant: `c=${c}`,
            kind: 'scenario',
            events: r.events,
            latency: r.latency,
            compareTo: [`raw-put c=${c}`, `emmett c=${c}`],
            notes: [
              'each command creates a new instance (a new aggregate): aggregates = commands sent, not 10,000',
              'object-store PUTs per event from the bucket: segments created during the loop ÷ commands acknowledged in it; the OMS is another process, its GETs and LISTs are not counted (a create reads nothing)',
            ],
            extra: { acknowledged, objectsCreated: puts, errors: r.errors },
          })
          rows.push({
            ...row,
            objectStorePerEvent: {
              put: acknowledged === 0 ? 0 : Math.round((puts / acknowledged) * 1000) / 1000,
            },
          })
        }
      } finally {
        await bucket.close()
      }
    } finally {
      await deployment.close()
    }
    return rows
  },
}
