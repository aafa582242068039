import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'
import fc from 'fast-check'
import { migrate } from '../../src/adapters/sql/migrations.ts'
import type { Sql } from '../../src/core/ports/sql.ts'
import { createSequenceAllocator } from '../../src/sequencing/allocator.ts'
import type {
  IndexedRow,
  ReserveRequest,
  ReserveResult,
  SegmentState,
} from '../../src/sequencing/allocator.ts'
import { contractSuite } from '../support/contract.ts'
import type { AdapterCase } from '../support/contract.ts'

export type AllocatorWorld = {
  readonly sql: Sql
  /** A second connection (another writer's pool); the same one on PGlite. */
  readonly secondSql: Sql
  /** Migrated schema the allocator under test uses. */
  readonly schema: string
  close(): Promise<void>
}

export const allocatorWorld = async (
  sql: Sql,
  secondSql: Sql,
  schema: string,
  dispose: () => Promise<void>,
): Promise<AllocatorWorld> => {
  await migrate(sql, schema)
  return { sql, secondSql, schema, close: dispose }
}

const HANDLER = 'write_side:Thing'
const WRITER = 'test'

/** What the model compares of a duplicate's row (the segment's id and key are the database's). */
type ModelRow = Pick<IndexedRow, 'eventId' | 'seq' | 'state' | 'hash' | 'position'>
type ModelResult =
  | Exclude<ReserveResult, { outcome: 'duplicate' }>
  | { outcome: 'duplicate'; rows: ModelRow[]; prevPending: boolean }

/**
 * The allocator's rules as plain code: the reference `reserve_batch` must agree with, whichever
 * of its paths (set-based, or append by append) a group takes.
 */
const createModel = () => {
  const last = new Map<string, number>()
  const events = new Map<
    string,
    { agg: string; seq: number; hash: string | null; segment: number; position: number }
  >()
  const segments = new Map<number, SegmentState>()
  const bySeq = (agg: string, seq: number) =>
    [...events.values()].find((e) => e.agg === agg && e.seq === seq)
  let nextSegment = 0
  return {
    markStored(ids: readonly number[]) {
      for (const id of ids) if (segments.get(id) === 'reserved') segments.set(id, 'stored')
    },
    markGap(ids: readonly number[]) {
      for (const id of ids) segments.set(id, 'gap')
    },
    reserve(requests: readonly ReserveRequest[]): { results: ModelResult[]; segment: number } {
      const segment = ++nextSegment
      segments.set(segment, 'reserved')
      const results = new Array<ModelResult>(requests.length)
      const order = requests
        .map((r, i) => ({ r, i }))
        .sort((x, y) =>
          x.r.aggregateId < y.r.aggregateId
            ? -1
            : x.r.aggregateId > y.r.aggregateId
              ? 1
              : x.i - y.i,
        )
      const pendingBefore = (agg: string, seq: number): boolean => {
        const prev = bySeq(agg, seq)
        return prev !== undefined && segments.get(prev.segment) === 'reserved'
      }
      for (const { r, i } of order) {
        const cur = last.get(r.aggregateId) ?? 0
        const known = r.eventIds.map((id) => events.get(id)).filter((e) => e !== undefined)
        if (known.some((e) => e.agg !== r.aggregateId)) {
          results[i] = {
            outcome: 'mismatch',
            reason: 'event id already appended to another aggregate',
          }
          continue
        }
        if (known.length > 0 && known.every((e) => segments.get(e.segment) === 'gap')) {
          for (const id of r.eventIds) events.delete(id)
        } else if (known.length === r.eventIds.length) {
          const rows = r.eventIds
            .map((id): ModelRow => {
              const e = events.get(id)
              assert.ok(e !== undefined)
              return {
                eventId: id,
                seq: e.seq,
                state: segments.get(e.segment) ?? 'reserved',
                hash: e.hash,
                position: e.position,
              }
            })
            .sort((x, y) => x.seq - y.seq)
          const first = rows[0]?.seq ?? 0
          results[i] = {
            outcome: 'duplicate',
            rows,
            prevPending: pendingBefore(r.aggregateId, first - 1),
          }
          continue
        } else if (known.length > 0) {
          results[i] = {
            outcome: 'mismatch',
            reason: 'some of these event ids were appended before, not all',
          }
          continue
        }
        if (r.expectedSeq !== null && r.expectedSeq !== cur) {
          results[i] = { outcome: 'conflict', actualSeq: cur }
          continue
        }
        r.eventIds.forEach((id, k) =>
          events.set(id, {
            agg: r.aggregateId,
            seq: cur + k + 1,
            hash: r.hashes[k] ?? null,
            segment,
            position: -1,
          }),
        )
        last.set(r.aggregateId, cur + r.eventIds.length)
        results[i] = {
          outcome: 'reserved',
          firstSeq: cur + 1,
          prevPending: cur > 0 && pendingBefore(r.aggregateId, cur),
        }
      }
      // Positions: the reserved ids in the order given. A duplicate of an id of this very group
      // (an id twice) was read before its position was set.
      let position = 0
      requests.forEach((r, i) => {
        if (results[i]?.outcome !== 'reserved') return
        for (const id of r.eventIds) {
          const e = events.get(id)
          if (e !== undefined) e.position = position++
        }
      })
      if (!results.some((x) => x.outcome === 'reserved')) segments.delete(segment)
      return { results, segment }
    },
  }
}

/** The database's outcome, without what only the database knows (segment ids and keys). */
const comparable = (results: readonly ReserveResult[]): ModelResult[] =>
  results.map((r) =>
    r.outcome === 'duplicate'
      ? {
          outcome: 'duplicate',
          rows: r.rows.map((x) => ({
            eventId: x.eventId,
            seq: x.seq,
            state: x.state,
            hash: x.hash,
            position: x.position,
          })),
          prevPending: r.prevPending,
        }
      : r,
  )

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
      `SELECT * FROM ${schema}.reserve_batch($1::text[], $2::text[], $3::bigint[], $4::int[], $5::text[], $6::text[], $7::bigint[], $8, $9)`,
      [[HANDLER], [aggregateId], [expectedSeq], [1], [eventId], [null], [], WRITER, 0],
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
    let counter = 0
    const one = (aggregateId: string, expectedSeq: number | null, ...ids: string[]) => ({
      handler: HANDLER,
      aggregateId,
      expectedSeq,
      eventIds: ids,
      hashes: ids.map(() => null),
    })

    test('any sequence of groups gets the outcomes and rows of the model, on either path', async () => {
      let plain = 0
      await fc.assert(
        fc.asyncProperty(fc.array(stepArb, { minLength: 1, maxLength: 12 }), async (steps) => {
          const prefix = `p${randomUUID().slice(0, 8)}-`
          const batch = allocator()
          const model = createModel()
          const current = new Map<number, number>()
          let previous: { db: number; model: number } | null = null
          for (const step of steps) {
            if (step.gap && !step.confirm && previous !== null) {
              await batch.markGap([previous.db])
              model.markGap([previous.model])
            }
            const stored = step.confirm ? previous : null
            if (stored !== null) model.markStored([stored.model])
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
            const got = await batch.reserve(
              requests,
              stored === null ? [] : [stored.db],
              WRITER,
              counter++,
            )
            const want = model.reserve(requests)
            assert.deepEqual(comparable(got.results), want.results, JSON.stringify({ requests }))
            previous = got.segmentId === null ? null : { db: got.segmentId, model: want.segment }
            got.results.forEach((r, i) => {
              const request = requests[i]
              const a = step.appends[i]
              if (r.outcome !== 'reserved' || request === undefined || a === undefined) return
              current.set(a.agg, r.firstSeq + request.eventIds.length - 1)
            })
          }
        }),
        { numRuns: 60, seed: 7 },
      )
      assert.ok(plain >= 100, `only ${plain} groups took the set-based path`)
    })

    test('a group with new, current and wrong expectations and several events; a stored id again', async () => {
      const a = allocator()
      const [x, y, z] = [randomUUID(), randomUUID(), randomUUID()]
      const ids = Array.from({ length: 5 }, () => randomUUID())
      const first = await a.reserve(
        [one(x, 0, ids[0] ?? ''), one(y, null, ids[1] ?? '')],
        [],
        WRITER,
        counter++,
      )
      assert.deepEqual(first.results, [
        { outcome: 'reserved', firstSeq: 1, prevPending: false },
        { outcome: 'reserved', firstSeq: 1, prevPending: false },
      ])
      assert.ok(first.segmentId !== null)
      const second = await a.reserve(
        [one(x, 1, ids[2] ?? '', ids[3] ?? ''), one(y, 0, ids[4] ?? ''), one(z, 3, randomUUID())],
        [first.segmentId],
        WRITER,
        counter++,
      )
      // x's event 1 is in the first segment, confirmed stored by this very call.
      assert.deepEqual(second.results, [
        { outcome: 'reserved', firstSeq: 2, prevPending: false },
        { outcome: 'conflict', actualSeq: 1 },
        { outcome: 'conflict', actualSeq: 0 },
      ])
      assert.ok(second.atUs >= first.atUs)
      // A stored id again, beside a new append: the duplicate, and the other one reserved.
      const third = await a.reserve(
        [one(y, null, ids[1] ?? ''), one(y, 1, ids[4] ?? '')],
        [],
        WRITER,
        counter++,
      )
      assert.deepEqual(comparable(third.results), [
        {
          outcome: 'duplicate',
          rows: [{ eventId: ids[1], seq: 1, state: 'stored', hash: null, position: 1 }],
          prevPending: false,
        },
        { outcome: 'reserved', firstSeq: 2, prevPending: false },
      ])
      const dup = third.results[0]
      assert.ok(dup?.outcome === 'duplicate')
      assert.equal(dup.rows[0]?.segment.id, first.segmentId)
      assert.equal(await a.current(HANDLER, x), 3)
      assert.equal(await a.current(HANDLER, y), 2)
      assert.equal(await a.current(HANDLER, z), 0)
      const third3 = await a.lookup(ids[3] ?? '')
      assert.equal(third3?.seq, 3)
      assert.equal(third3?.position, 1)
      assert.equal(third3?.segment.id, second.segmentId)
      assert.equal((await a.lookup(ids[2] ?? ''))?.state, 'reserved')
      assert.ok(second.segmentId !== null)
      await a.markStored([second.segmentId])
      assert.equal((await a.lookup(ids[2] ?? ''))?.state, 'stored')
      // The stream index: an aggregate's rows in sequence order, with where each one is.
      const stream = await a.stream(HANDLER, x, 1, 10)
      assert.deepEqual(
        stream.map((r) => [r.seq, r.eventId, r.position, r.segment.id]),
        [
          [1, ids[0], 0, first.segmentId],
          [2, ids[2], 0, second.segmentId],
          [3, ids[3], 1, second.segmentId],
        ],
      )
      // A group that reserves nothing keeps no segment row.
      const none = await a.reserve([one(z, 7, randomUUID())], [], WRITER, counter++)
      assert.equal(none.segmentId, null)
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
              WRITER,
              counter++,
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
      await allocator().reserve([one(agg, 0, randomUUID())], [], WRITER, counter++)
      // The first attempt's transaction stays open after its reservation.
      const first = await reserveAndHold(sql, schema, agg, 1, id)
      const retry = allocator(world().secondSql).reserve([one(agg, 1, id)], [], WRITER, counter++)
      await new Promise((resolve) => setTimeout(resolve, 200))
      await first.commit()
      assert.deepEqual(comparable((await retry).results), [
        {
          outcome: 'duplicate',
          rows: [{ eventId: id, seq: 2, state: 'reserved', hash: null, position: 0 }],
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
      const other = allocator(world().secondSql).reserve([one(b, 0, id)], [], WRITER, counter++)
      await new Promise((resolve) => setTimeout(resolve, 200))
      await first.commit()
      const [result] = (await other).results
      assert.equal(result?.outcome, 'mismatch')
      assert.equal(await allocator().current(HANDLER, b), 0)
      assert.equal((await allocator().lookup(id))?.aggregateId, a)
    })
  })
