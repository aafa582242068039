import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'
import fc from 'fast-check'
import { migrate } from '../../src/adapters/sql/migrations.ts'
import type { Sql } from '../../src/core/ports/sql.ts'
import { createSequenceAllocator } from '../../src/sequencing/allocator.ts'
import type {
  ReserveRequest,
  ReserveResult,
  ReservationState,
} from '../../src/sequencing/allocator.ts'
import { contractSuite } from '../support/contract.ts'
import type { AdapterCase } from '../support/contract.ts'

export type AllocatorWorld = {
  readonly sql: Sql
  /** A second connection (another writer's pool); the same one on PGlite. */
  readonly secondSql: Sql
  /** Migrated schema the allocator under test uses. */
  readonly schema: string
  /** A second migrated schema, for the reference function of migration 001. */
  readonly referenceSchema: string
  close(): Promise<void>
}

export const allocatorWorld = async (
  sql: Sql,
  secondSql: Sql,
  schema: string,
  dispose: () => Promise<void>,
): Promise<AllocatorWorld> => {
  const referenceSchema = `${schema}_ref`
  await migrate(sql, schema)
  await migrate(sql, referenceSchema)
  return { sql, secondSql, schema, referenceSchema, close: dispose }
}

const HANDLER = 'write_side:Thing'

/**
 * Migration 001's `reserve_sequences`, called the way the allocator called it until migration 007:
 * the reference the batch function must agree with (older writers still call it).
 */
const referenceReserve = async (
  sql: Sql,
  schema: string,
  requests: readonly ReserveRequest[],
  stored: readonly string[],
): Promise<ReserveResult[]> => {
  const payload = requests.map((r, i) => ({
    i,
    handler: r.handler,
    aggregate_id: r.aggregateId,
    expected_seq: r.expectedSeq,
    ids: r.eventIds,
    hashes: r.hashes,
  }))
  const [row] = await sql.query<{ result: unknown }>(
    `SELECT ${schema}.reserve_sequences($1::jsonb, $2::text[]) AS result`,
    [JSON.stringify(payload), stored],
  )
  const raw = row?.result
  const parsed = (typeof raw === 'string' ? JSON.parse(raw) : raw) as {
    results: {
      i: number
      outcome: ReserveResult['outcome']
      first_seq?: number
      actual_seq?: number
      prev_pending?: boolean
      reason?: string
      rows?: { event_id: string; seq: number; state: ReservationState; hash: string | null }[]
    }[]
  }
  const out: ReserveResult[] = new Array<ReserveResult>(requests.length)
  for (const r of parsed.results) {
    out[r.i] =
      r.outcome === 'reserved'
        ? {
            outcome: 'reserved',
            firstSeq: Number(r.first_seq),
            prevPending: r.prev_pending === true,
          }
        : r.outcome === 'conflict'
          ? { outcome: 'conflict', actualSeq: Number(r.actual_seq) }
          : r.outcome === 'duplicate'
            ? {
                outcome: 'duplicate',
                rows: (r.rows ?? []).map((x) => ({
                  eventId: x.event_id,
                  seq: Number(x.seq),
                  state: x.state,
                  hash: x.hash,
                })),
                prevPending: r.prev_pending === true,
              }
            : { outcome: 'mismatch', reason: r.reason ?? '' }
  }
  return out
}

/**
 * Reserves one event in a transaction that stays open until `commit` is called: a writer caught
 * between its reservation and its commit.
 */
const reserveAndHold = async (
  sql: Sql,
  schema: string,
  aggregateId: string,
  expectedSeq: number | null,
  eventId: string,
): Promise<{ commit(): Promise<void> }> => {
  let release = (): void => {}
  const held = new Promise<void>((resolve) => (release = resolve))
  let reserved = (): void => {}
  const reservedYet = new Promise<void>((resolve) => (reserved = resolve))
  const done = sql.transaction(async (tx) => {
    await tx.query(
      `SELECT * FROM ${schema}.reserve_batch($1::text[], $2::text[], $3::bigint[], $4::int[], $5::text[], $6::text[], $7::text[])`,
      [[HANDLER], [aggregateId], [expectedSeq], [1], [eventId], [null], []],
    )
    reserved()
    await held
  })
  await Promise.race([reservedYet, done])
  return {
    commit() {
      release()
      return done
    },
  }
}

/** What a schema holds for the given ids and aggregates, comparable across schemas. */
const snapshot = async (
  sql: Sql,
  schema: string,
  prefix: string,
): Promise<{ events: unknown[]; sequences: unknown[] }> => ({
  events: await sql.query(
    `SELECT event_id, aggregate_id, sequence_number::int AS seq, state, hash FROM ${schema}.appended_events
      WHERE event_id LIKE $1 ORDER BY event_id`,
    [`${prefix}%`],
  ),
  // A row at 0 means the same as no row (reserve_batch creates one for every aggregate it locks).
  sequences: await sql.query(
    `SELECT aggregate_id, last_sequence::int AS last FROM ${schema}.aggregate_sequences
      WHERE aggregate_id LIKE $1 AND last_sequence > 0 ORDER BY aggregate_id`,
    [`${prefix}%`],
  ),
})

type Step = {
  readonly appends: readonly {
    readonly agg: number
    /** How the expected sequence is chosen from the test's view of the aggregate. */
    readonly expect: 'none' | 'current' | 'zero' | 'ahead' | 'behind'
    /** -1: a new id; otherwise one of a few ids that may have been appended before. */
    readonly ids: readonly number[]
    readonly hashed: boolean
  }[]
  /** Confirm the ids reserved by the previous step as stored (they ride along). */
  readonly confirm: boolean
  /** Give up the previous step's reservations as gaps (their ids may be appended again). */
  readonly gap: boolean
}

/** Mostly fresh ids, so most groups take the set-based path; some retried ones, which do not. */
const stepArb: fc.Arbitrary<Step> = fc.record({
  appends: fc.array(
    fc.record({
      agg: fc.integer({ min: 0, max: 9 }),
      expect: fc.constantFrom('none', 'current', 'current', 'zero', 'ahead', 'behind'),
      ids: fc.array(
        fc.oneof(
          { weight: 10, arbitrary: fc.constant(-1) },
          { weight: 1, arbitrary: fc.integer({ min: 0, max: 7 }) },
        ),
        { minLength: 1, maxLength: 3 },
      ),
      hashed: fc.boolean(),
    }),
    { minLength: 1, maxLength: 5 },
  ),
  confirm: fc.boolean(),
  gap: fc.boolean(),
})

/** The allocator's contract (DESIGN.md W3–W5) on PGlite and PostgreSQL. */
export const allocatorContract = (
  cases: readonly AdapterCase<AllocatorWorld>[],
  options: { readonly twoConnections: boolean },
): void =>
  contractSuite<AllocatorWorld>('sequence allocator', cases, (world) => {
    const allocator = (sql = world().sql) =>
      createSequenceAllocator({ sql, schema: world().schema })
    const one = (aggregateId: string, expectedSeq: number | null, ...ids: string[]) => ({
      handler: HANDLER,
      aggregateId,
      expectedSeq,
      eventIds: ids,
      hashes: ids.map(() => null),
    })

    test('any sequence of groups gets the outcomes and rows of migration 001 (reserve_sequences)', async () => {
      let plain = 0
      await fc.assert(
        fc.asyncProperty(fc.array(stepArb, { minLength: 1, maxLength: 12 }), async (steps) => {
          const { sql, schema, referenceSchema } = world()
          const prefix = `p${randomUUID().slice(0, 8)}-`
          const batch = allocator()
          const reference = createSequenceAllocator({ sql, schema: referenceSchema })
          const current = new Map<number, number>()
          let previous: string[] = []
          for (const step of steps) {
            if (step.gap && !step.confirm && previous.length > 0) {
              await batch.markGap(previous)
              await reference.markGap(previous)
            }
            const stored = step.confirm ? previous : []
            let fresh = 0
            const requests: ReserveRequest[] = step.appends.map((a) => {
              const ids = a.ids.map((id) =>
                id < 0 ? `new-${fresh++}-${randomUUID()}` : `old-${id}`,
              )
              const at = current.get(a.agg) ?? 0
              const expectedSeq = {
                none: null,
                current: at,
                zero: 0,
                ahead: at + 1,
                behind: Math.max(0, at - 1),
              }[a.expect]
              return {
                handler: HANDLER,
                aggregateId: `${prefix}agg-${a.agg}`,
                expectedSeq,
                eventIds: ids.map((id) => `${prefix}${id}`),
                hashes: ids.map((id) => (a.hashed ? `h-${id}` : null)),
              }
            })
            const aggs = new Set(requests.map((r) => r.aggregateId))
            if (
              aggs.size === requests.length &&
              requests.every((r) => r.eventIds.every((id) => id.includes('new-')))
            )
              plain++
            const got = (await batch.reserve(requests, stored)).results
            const want = await referenceReserve(sql, referenceSchema, requests, stored)
            assert.deepEqual(got, want, JSON.stringify({ requests, stored }))
            previous = []
            got.forEach((r, i) => {
              const request = requests[i]
              const a = step.appends[i]
              if (r.outcome !== 'reserved' || request === undefined || a === undefined) return
              current.set(a.agg, r.firstSeq + request.eventIds.length - 1)
              previous.push(...request.eventIds)
            })
          }
          assert.deepEqual(
            await snapshot(sql, schema, prefix),
            await snapshot(sql, referenceSchema, prefix),
          )
        }),
        { numRuns: 60, seed: 7 },
      )
      assert.ok(plain >= 100, `only ${plain} groups took the set-based path`)
    })

    test('a group with new, current and wrong expectations and several events; a stored id again', async () => {
      const a = allocator()
      const [x, y, z] = [randomUUID(), randomUUID(), randomUUID()]
      const ids = Array.from({ length: 5 }, () => randomUUID())
      const first = await a.reserve([one(x, 0, ids[0] ?? ''), one(y, null, ids[1] ?? '')], [])
      assert.deepEqual(first.results, [
        { outcome: 'reserved', firstSeq: 1, prevPending: false },
        { outcome: 'reserved', firstSeq: 1, prevPending: false },
      ])
      const second = await a.reserve(
        [one(x, 1, ids[2] ?? '', ids[3] ?? ''), one(y, 0, ids[4] ?? ''), one(z, 3, randomUUID())],
        [ids[1] ?? ''],
      )
      assert.deepEqual(second.results, [
        { outcome: 'reserved', firstSeq: 2, prevPending: true },
        { outcome: 'conflict', actualSeq: 1 },
        { outcome: 'conflict', actualSeq: 0 },
      ])
      assert.ok(second.atUs >= first.atUs)
      // A stored id again, beside a new append: the duplicate, and the other one reserved.
      const third = await a.reserve([one(y, null, ids[1] ?? ''), one(y, 1, ids[4] ?? '')], [])
      assert.deepEqual(third.results, [
        {
          outcome: 'duplicate',
          rows: [{ eventId: ids[1], seq: 1, state: 'stored', hash: null }],
          prevPending: false,
        },
        { outcome: 'reserved', firstSeq: 2, prevPending: false },
      ])
      assert.equal(await a.current(HANDLER, x), 3)
      assert.equal(await a.current(HANDLER, y), 2)
      assert.equal(await a.current(HANDLER, z), 0)
      assert.equal((await a.lookup(ids[3] ?? ''))?.seq, 3)
      assert.equal((await a.lookup(ids[0] ?? ''))?.state, 'reserved')
      await a.markStored([ids[0] ?? ''])
      assert.equal((await a.lookup(ids[0] ?? ''))?.state, 'stored')
    })

    test('concurrent groups over the same aggregates in opposite orders: every sequence once, none skipped (W4)', async () => {
      const aggs = Array.from({ length: 24 }, () => randomUUID())
      const writers = [allocator(), allocator(world().secondSql)]
      const rounds = 15
      const reservedBy = new Map<string, number[]>(aggs.map((a) => [a, []]))
      await Promise.all(
        writers.map(async (w, k) => {
          for (let round = 0; round < rounds; round++) {
            const order = k === 0 ? aggs : [...aggs].reverse()
            const { results } = await w.reserve(
              order.map((a) => one(a, null, randomUUID())),
              [],
            )
            results.forEach((r, i) => {
              assert.equal(r.outcome, 'reserved')
              if (r.outcome === 'reserved') reservedBy.get(order[i] ?? '')?.push(r.firstSeq)
            })
          }
        }),
      )
      for (const a of aggs) {
        const seqs = (reservedBy.get(a) ?? []).sort((x, y) => x - y)
        assert.deepEqual(
          seqs,
          Array.from({ length: 2 * rounds }, (_, i) => i + 1),
        )
      }
    })

    // Races between two writers need two connections (PGlite has one).
    if (!options.twoConnections) return

    test('a retry racing its own first attempt waits for it and gets the same sequence (W3)', async () => {
      const { sql, schema } = world()
      const agg = randomUUID()
      const id = randomUUID()
      // The aggregate exists, so only its row lock orders the two attempts.
      await allocator().reserve([one(agg, 0, randomUUID())], [])
      // The first attempt's transaction stays open after its reservation.
      const first = await reserveAndHold(sql, schema, agg, 1, id)
      const retry = allocator(world().secondSql).reserve([one(agg, 1, id)], [])
      await new Promise((resolve) => setTimeout(resolve, 200))
      await first.commit()
      assert.deepEqual((await retry).results, [
        {
          outcome: 'duplicate',
          rows: [{ eventId: id, seq: 2, state: 'reserved', hash: null }],
          prevPending: true,
        },
      ])
      assert.equal(await allocator().current(HANDLER, agg), 2)
    })

    test('an id appended concurrently to another aggregate is a mismatch; nothing is reserved (W3)', async () => {
      const { sql, schema } = world()
      const [a, b] = [randomUUID(), randomUUID()]
      const id = randomUUID()
      const first = await reserveAndHold(sql, schema, a, null, id)
      // Not visible to this group's look-up yet: its insert waits for the first, then comes short.
      const other = allocator(world().secondSql).reserve([one(b, 0, id)], [])
      await new Promise((resolve) => setTimeout(resolve, 200))
      await first.commit()
      const [result] = (await other).results
      assert.equal(result?.outcome, 'mismatch')
      assert.equal(await allocator().current(HANDLER, b), 0)
      assert.equal((await allocator().lookup(id))?.aggregateId, a)
    })
  })
