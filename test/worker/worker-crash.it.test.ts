// Checklist 2 of issue #5: a worker killed with SIGKILL after the claim, after the side effect and
// before mark_done loses nothing; it is recovered by the fast path (the same member restarted,
// well before its lease lapses) and by the lease (another member, once a short lease lapsed), and
// the effect completes exactly once. Workers run as separate processes
// (fixtures/worker-process.ts) on real PostgreSQL and Kafka.
import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { Admin } from '@platformatic/kafka'
import { createKafkaBus } from '../../src/adapters/bus/kafka-bus.ts'
import { migrate } from '../../src/adapters/sql/migrations.ts'
import { createPgSql } from '../../src/adapters/sql/pg.ts'
import { canonicalJson, createEnvelope } from '../../src/core/envelope.ts'
import type { StoredEnvelope } from '../../src/core/envelope.ts'
import { eventually } from '../support/collect.ts'
import { databaseUrl, kafkaBrokers, uniqueName } from '../support/services.ts'
import { spawnChild, withChildOutput } from '../support/worker-child.ts'
import type { TestChild } from '../support/worker-child.ts'

const fixture = fileURLToPath(new URL('./fixtures/worker-process.ts', import.meta.url))

const points = ['after-claim', 'after-effect', 'before-mark-done'] as const
type Point = (typeof points)[number]
type Recovery = 'fast path' | 'lease'
type Kind = 'projection' | 'external'

/** 10 aggregates × 2 events. */
const EVENTS = 20
/** Long enough that a recovery before it can only be the fast path. */
const LONG_LEASE_MS = 60_000
/** Short, so that another member takes over once it lapses. */
const SHORT_LEASE_MS = 3_000

const run = async (point: Point, recovery: Recovery, kind: Kind): Promise<void> => {
  const sql = createPgSql({ connectionString: databaseUrl(), max: 2 })
  const bus = createKafkaBus({ brokers: kafkaBrokers() })
  const schema = uniqueName('cairn_crash').replace(/-/g, '_')
  const topic = uniqueName('crash-worker')
  const group = uniqueName('crash-group')
  const children: TestChild[] = []
  try {
    await migrate(sql, schema)
    await sql.exec(`
      CREATE TABLE ${schema}.effects (event_id text NOT NULL, aggregate_id text, seq bigint);
      CREATE TABLE ${schema}.external_effects (
        idempotency_key text PRIMARY KEY, deliveries integer NOT NULL DEFAULT 1);`)
    await bus.ensureTopics([{ name: topic, partitions: 2 }])
    const envs: StoredEnvelope[] = [1, 2].flatMap((seq) =>
      Array.from({ length: EVENTS / 2 }, (_, a) => ({
        ...createEnvelope({
          event_type: 'THING_HAPPENED',
          aggregate_type: 'Thing',
          aggregate_id: `crash-${a}-${topic}`,
          metadata: { kind: 'domain' },
        }),
        sequence_number: seq,
      })),
    )
    const producer = bus.producer()
    await producer.send(
      envs.map((e) => ({
        topic,
        key: e.aggregate_id,
        value: new TextEncoder().encode(canonicalJson(e)),
        headers: { event_id: e.event_id },
      })),
    )
    await producer.close()

    const leaseMs = recovery === 'fast path' ? LONG_LEASE_MS : SHORT_LEASE_MS
    const worker = (name: string, member: string, crashAt: Point | '') => {
      const child = spawnChild(name, fixture, {
        TEST_SCHEMA: schema,
        TEST_TOPIC: topic,
        TEST_GROUP: group,
        TEST_MEMBER: member,
        TEST_LEASE_MS: String(leaseMs),
        TEST_KIND: kind,
        TEST_CRASH_AT: crashAt,
      })
      children.push(child)
      return child
    }

    await withChildOutput(children, async () => {
      const first = worker('first worker', 'worker-a', point)
      const chaos = await first.waitFor((l) => l.chaos === point, `the ${point} point`, 60_000)
      const stuck = chaos.event_ids as string[]
      assert.ok(stuck.length > 0)
      await first.kill()
      // A heartbeat sent just before the kill has landed by now.
      await new Promise((r) => setTimeout(r, 300))
      const [before] = await sql.query<{ processing: boolean; owner: string; until: Date }>(
        `SELECT bool_and(status = 'processing') AS processing, min(owner) AS owner,
                max(lease_until) AS until
           FROM ${schema}.processed_events WHERE handler = $1 AND event_id = ANY ($2::text[])`,
        [kind, stuck],
      )
      assert.ok(before)
      if (kind === 'projection') {
        // Claims, effects and mark_done of a batch share one transaction: the kill rolled it
        // back, so the dead worker holds nothing and left no effect.
        await eventually(async () => {
          const held = await sql.query(
            `SELECT 1 FROM ${schema}.processed_events WHERE handler = $1 AND event_id = ANY ($2::text[])`,
            [kind, stuck],
          )
          return held.length === 0
        }, 'the dead worker’s transaction rolled back')
        const effects = await sql.query(
          `SELECT 1 FROM ${schema}.effects WHERE event_id = ANY ($1::text[])`,
          [stuck],
        )
        assert.equal(effects.length, 0, 'no effect of the interrupted batch')
      } else {
        assert.equal(before.processing, true, 'the dead worker held its claims')
        assert.match(before.owner, /^worker-a\//)
      }

      const second = worker(
        recovery === 'fast path' ? 'restarted worker (same member)' : 'other worker',
        recovery === 'fast path' ? 'worker-a' : 'worker-b',
        '',
      )
      await eventually(
        async () => {
          const [row] = await sql.query<{ n: string }>(
            `SELECT count(*) AS n FROM ${schema}.processed_events WHERE handler = $1 AND status = 'done'`,
            [kind],
          )
          return Number(row?.n) >= EVENTS
        },
        'every event done after the recovery',
        90_000,
      )
      assert.equal(await second.stop(), 0, 'the recovering worker stops cleanly')

      // Every event done exactly once in the registry.
      const rows = await sql.query<{ status: string; n: string }>(
        `SELECT status, count(*) AS n FROM ${schema}.processed_events WHERE handler = $1 GROUP BY status`,
        [kind],
      )
      assert.deepEqual(
        rows.map((r) => [r.status, Number(r.n)]),
        [['done', EVENTS]],
      )
      // The side effect completed exactly once.
      if (kind === 'projection') {
        const effects = await sql.query<{ event_id: string }>(
          `SELECT event_id FROM ${schema}.effects`,
        )
        assert.equal(effects.length, EVENTS, 'one projection row per event')
        assert.deepEqual(
          new Set(effects.map((e) => e.event_id)),
          new Set(envs.map((e) => e.event_id)),
        )
      } else {
        const effects = await sql.query<{ idempotency_key: string; deliveries: number }>(
          `SELECT idempotency_key, deliveries FROM ${schema}.external_effects`,
        )
        assert.deepEqual(
          new Set(effects.map((e) => e.idempotency_key)),
          new Set(envs.map((e) => e.event_id)),
          'the effect recorded once per idempotency key',
        )
        const asked = effects.reduce((n, e) => n + e.deliveries, 0)
        if (point === 'after-claim') assert.equal(asked, EVENTS, 'nothing ran before the crash')
        else assert.ok(asked > EVENTS, `${asked} calls: the interrupted effect ran again`)
      }
      // The interrupted events were taken over: by the restarted member before the lease lapsed,
      // or by another member once it had.
      const taken = await sql.query<{ owner: string; attempts: number; done_at: Date }>(
        `SELECT owner, attempts, updated_at AS done_at FROM ${schema}.processed_events
          WHERE handler = $1 AND event_id = ANY ($2::text[])`,
        [kind, stuck],
      )
      assert.equal(taken.length, stuck.length)
      for (const t of taken) {
        if (kind === 'projection') {
          assert.equal(t.attempts, 1, 'the rolled-back claim left no trace')
          assert.match(t.owner, recovery === 'fast path' ? /^worker-a\// : /^worker-b\//)
          continue
        }
        assert.equal(t.attempts, 2, 'claimed by the dead worker, then by its successor')
        assert.notEqual(t.owner, before.owner)
        if (recovery === 'fast path') {
          assert.match(t.owner, /^worker-a\//)
          assert.ok(t.done_at < before.until, 'recovered before the lease expired')
        } else {
          assert.match(t.owner, /^worker-b\//)
          assert.ok(t.done_at >= before.until, 'taken over once the lease had lapsed')
        }
      }
    })
  } finally {
    await bus.close()
    const admin = new Admin({ clientId: 'cairn-test-cleanup', bootstrapBrokers: kafkaBrokers() })
    await admin.deleteGroups({ groups: [group] }).catch(() => {})
    await admin.deleteTopics({ topics: [topic, `${topic}-dlq`] }).catch(() => {})
    await admin.close()
    await sql.exec(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
    await sql.close()
  }
}

// Kafka holds a killed member's partitions until its session times out (6 s in the fixture), so
// each recovery takes that long; scenarios run a few at a time.
void describe('worker killed with SIGKILL (checklist 2)', { concurrency: 3 }, () => {
  for (const kind of ['projection', 'external'] as const) {
    for (const point of points) {
      for (const recovery of ['fast path', 'lease'] as const) {
        void test(
          `${kind} worker killed ${point.replaceAll('-', ' ')}, recovered by ${recovery}: effect completed exactly once`,
          { timeout: 180_000 },
          () => run(point, recovery, kind),
        )
      }
    }
  }
})
