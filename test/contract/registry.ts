import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'
import { migrate } from '../../src/adapters/sql/migrations.ts'
import type { Sql } from '../../src/core/ports/sql.ts'
import { createProcessedEventRegistry } from '../../src/registry/processed-events.ts'
import type { ClaimInput, RegistryOptions } from '../../src/registry/processed-events.ts'
import { contractSuite } from '../support/contract.ts'
import type { AdapterCase } from '../support/contract.ts'

export type RegistryWorld = {
  readonly sql: Sql
  /** A second connection (another process's pool); the same one on PGlite. */
  readonly secondSql: Sql
  readonly schema: string
  close(): Promise<void>
}

export const registryWorld = async (
  sql: Sql,
  secondSql: Sql,
  schema: string,
  dispose: () => Promise<void>,
): Promise<RegistryWorld> => {
  await migrate(sql, schema)
  return { sql, secondSql, schema, close: dispose }
}

const events = (n: number, aggregateId = `agg-${randomUUID()}`, from = 1): ClaimInput[] =>
  Array.from({ length: n }, (_, i) => ({
    eventId: randomUUID(),
    aggregateType: 'Thing',
    aggregateId,
    seq: from + i,
  }))

/** The registry's contract (DESIGN.md C1–C5) on PGlite and PostgreSQL. */
export const registryContract = (cases: readonly AdapterCase<RegistryWorld>[]): void =>
  contractSuite<RegistryWorld>('processed-event registry', cases, (world) => {
    const registry = (member: string, options: Partial<RegistryOptions> = {}) =>
      createProcessedEventRegistry({ sql: world().sql, schema: world().schema, member, ...options })

    test('two consumers claiming the same events at once: exactly one claim succeeds per event (C4)', async () => {
      const a = registry('a')
      const b = createProcessedEventRegistry({
        sql: world().secondSql,
        schema: world().schema,
        member: 'b',
      })
      await a.start()
      await b.start()
      // One event per aggregate, so the ordering guard does not interfere.
      const batch = Array.from({ length: 20 }, () => events(1)[0] as ClaimInput)
      const [ra, rb] = await Promise.all([a.claim('h-c4', batch), b.claim('h-c4', batch)])
      for (const e of batch) {
        const outcomes = [ra.get(e.eventId), rb.get(e.eventId)]
        assert.equal(outcomes.filter((o) => o === 'claimed').length, 1, JSON.stringify(outcomes))
        assert.ok(outcomes.includes('in_progress'))
      }
    })

    test('done is a duplicate; a redelivery never runs the effect again (C1)', async () => {
      const r = registry('dup')
      await r.start()
      const [e] = events(1)
      assert.ok(e)
      assert.equal((await r.claim('h-dup', [e])).get(e.eventId), 'claimed')
      assert.deepEqual(
        [...(await r.markDone('h-dup', [e.eventId], undefined, { ok: 1 }))],
        [e.eventId],
      )
      assert.equal((await r.claim('h-dup', [e])).get(e.eventId), 'duplicate')
      assert.equal((await registry('other').claim('h-dup', [e])).get(e.eventId), 'duplicate')
      const [row] = await r.status(e.eventId)
      assert.equal(row?.status, 'done')
      assert.deepEqual(row?.result, { ok: 1 })
    })

    test('an older sequence after a newer one is stale and recorded; in-order events never are (C3)', async () => {
      const r = registry('stale')
      await r.start()
      const [e1, e2, e3] = events(3)
      assert.ok(e1 && e2 && e3)
      for (const e of [e1, e2]) {
        assert.equal((await r.claim('h-st', [e])).get(e.eventId), 'claimed')
        await r.markDone('h-st', [e.eventId])
      }
      // A replayed older event (a new id at an old sequence) is stale.
      const old = { ...e1, eventId: randomUUID() }
      assert.equal((await r.claim('h-st', [old])).get(old.eventId), 'stale')
      assert.equal((await r.status(old.eventId))[0]?.status, 'skipped_stale')
      assert.equal((await r.claim('h-st', [e3])).get(e3.eventId), 'claimed')
      // In one batch, in order: all claimed in sequence order… but a newer one waits for the older.
      const batch = events(3, `agg-${randomUUID()}`)
      const out = await r.claim('h-st', batch)
      assert.deepEqual(
        batch.map((e) => out.get(e.eventId)),
        ['claimed', 'in_progress', 'in_progress'],
      )
    })

    test('a newer event waits while the older one is processing, then is claimed (C3)', async () => {
      const r = registry('wait')
      await r.start()
      const [e1, e2] = events(2)
      assert.ok(e1 && e2)
      assert.equal((await r.claim('h-w', [e1])).get(e1.eventId), 'claimed')
      assert.equal((await r.claim('h-w', [e2])).get(e2.eventId), 'in_progress')
      await r.markDone('h-w', [e1.eventId])
      assert.equal((await r.claim('h-w', [e2])).get(e2.eventId), 'claimed')
    })

    test('an expired lease is re-claimed by another owner (C2)', async () => {
      const a = registry('lease-a', { leaseMs: 200 })
      const b = registry('lease-b', { leaseMs: 200 })
      await a.start()
      await b.start()
      const [e] = events(1)
      assert.ok(e)
      assert.equal((await a.claim('h-l', [e])).get(e.eventId), 'claimed')
      assert.equal((await b.claim('h-l', [e])).get(e.eventId), 'in_progress')
      await new Promise((r) => setTimeout(r, 400))
      assert.equal((await b.claim('h-l', [e])).get(e.eventId), 'claimed')
      // The first owner lost it: its mark_done does nothing.
      assert.equal((await a.markDone('h-l', [e.eventId])).size, 0)
      assert.equal((await b.markDone('h-l', [e.eventId])).size, 1)
    })

    test('heartbeats extend the lease of the holder only', async () => {
      const a = registry('hb-a', { leaseMs: 1_500 })
      const b = registry('hb-b', { leaseMs: 1_500 })
      await a.start()
      await b.start()
      const [e] = events(1)
      assert.ok(e)
      await a.claim('h-hb', [e])
      for (let i = 0; i < 3; i++) {
        await new Promise((r) => setTimeout(r, 600))
        assert.deepEqual([...(await a.heartbeat('h-hb', [e.eventId]))], [e.eventId])
        assert.equal((await b.claim('h-hb', [e])).get(e.eventId), 'in_progress')
      }
      assert.equal((await b.heartbeat('h-hb', [e.eventId])).size, 0)
    })

    test('a restarted worker re-claims its dead claims at once, without waiting out the lease (C2)', async () => {
      const before = registry('worker-1', { leaseMs: 900_000 })
      await before.start()
      const [e] = events(1)
      assert.ok(e)
      assert.equal((await before.claim('h-r', [e])).get(e.eventId), 'claimed')
      // The process dies (no stop); a new instance of the same member starts.
      const after = registry('worker-1', { leaseMs: 900_000 })
      await after.start()
      assert.equal((await after.claim('h-r', [e])).get(e.eventId), 'claimed')
      const [row] = await after.status(e.eventId)
      assert.equal(row?.owner, after.owner)
      assert.equal(row?.attempts, 2)
    })

    test('an owner that stopped, or went silent, frees its claims at once (C2)', async () => {
      const gone = registry('gone', { ownerTimeoutMs: 300 })
      const other = registry('other-2', { ownerTimeoutMs: 300 })
      await gone.start()
      await other.start()
      const [e1, e2] = [events(1)[0], events(1)[0]]
      assert.ok(e1 && e2)
      await gone.claim('h-g', [e1, e2])
      assert.equal((await other.claim('h-g', [e1])).get(e1.eventId), 'in_progress')
      await gone.stop()
      assert.equal((await other.claim('h-g', [e1])).get(e1.eventId), 'claimed')
      const silent = registry('silent', { ownerTimeoutMs: 300 })
      await silent.start()
      const [e3] = events(1)
      assert.ok(e3)
      await silent.claim('h-g', [e3])
      await new Promise((r) => setTimeout(r, 500))
      await other.touch()
      assert.equal((await other.claim('h-g', [e3])).get(e3.eventId), 'claimed')
    })

    test('a dead-lettered event is not re-claimed on redelivery; later events of its aggregate are parked (C5)', async () => {
      const r = registry('poison')
      await r.start()
      const [e1, e2, e3] = events(3)
      assert.ok(e1 && e2 && e3)
      await r.claim('h-p', [e1])
      await r.markFailed('h-p', e1.eventId, 'boom', false)
      assert.equal((await r.claim('h-p', [e1])).get(e1.eventId), 'failed')
      assert.equal((await r.claim('h-p', [e2])).get(e2.eventId), 'parked')
      assert.equal((await r.claim('h-p', [e3])).get(e3.eventId), 'parked')
      const other = events(1)[0]
      assert.ok(other)
      assert.equal(
        (await r.claim('h-p', [other])).get(other.eventId),
        'claimed',
        'other aggregates flow',
      )
      const parked = await r.listParked('h-p')
      assert.deepEqual(
        parked.map((p) => [p.seq, p.status]),
        [
          [1, 'failed'],
          [2, 'parked'],
          [3, 'parked'],
        ],
      )
      assert.equal(parked[0]?.lastError, 'boom')

      // The operator retries them: they come back one at a time, in sequence order.
      assert.equal(await r.retryParked('h-p', [e1.eventId, e2.eventId, e3.eventId], 'tester'), 3)
      for (const e of [e1, e2, e3]) {
        const retried = await r.claimRetries('h-p', 10)
        assert.deepEqual(
          retried.map((x) => x.seq),
          [e.seq],
        )
        assert.equal((await r.markDone('h-p', [e.eventId])).size, 1)
      }
      assert.deepEqual(await r.claimRetries('h-p', 10), [])
      // Who released them stays on their records.
      const [done] = await r.status(e1.eventId)
      assert.equal(done?.status, 'done')
      assert.equal(done?.resolvedBy, 'tester')
      assert.ok(done?.resolvedAt !== null)
    })

    test('claims of one aggregate take turns: an older and a newer event claimed at once by two consumers are never both claimed (C3, C4)', async () => {
      const a = registry('turns-a')
      const b = createProcessedEventRegistry({
        sql: world().secondSql,
        schema: world().schema,
        member: 'turns-b',
      })
      await a.start()
      await b.start()
      for (let round = 0; round < 3; round++) {
        const [e1, e2] = events(2, `a-${randomUUID()}`)
        assert.ok(e1 && e2)
        // The older event heads a long batch, so its claim stays uncommitted for a while.
        const filler = Array.from({ length: 300 }, () => events(1, `z-${randomUUID()}`)[0])
        const [ra, rb] = await Promise.all([
          a.claim('h-turns', [e1, ...(filler as ClaimInput[])]),
          b.claim('h-turns', [e2]),
        ])
        const outcomes = [ra.get(e1.eventId), rb.get(e2.eventId)]
        assert.equal(outcomes.filter((o) => o === 'claimed').length, 1, JSON.stringify(outcomes))
        assert.ok(outcomes.includes('in_progress'))
      }
    })

    test('an older event arriving while a newer one is processing waits, and is stale once the newer one is done (C3)', async () => {
      const r = registry('late')
      await r.start()
      const [e1, e2] = events(2)
      assert.ok(e1 && e2)
      assert.equal((await r.claim('h-late', [e2])).get(e2.eventId), 'claimed')
      assert.equal((await r.claim('h-late', [e1])).get(e1.eventId), 'in_progress')
      assert.equal((await r.markDone('h-late', [e2.eventId])).size, 1)
      assert.equal((await r.claim('h-late', [e1])).get(e1.eventId), 'stale')
    })

    test('an event released for a retry obeys the ordering rules: behind a failed predecessor it parks again (C3, C5)', async () => {
      const r = registry('redrive')
      await r.start()
      const [e1, e2] = events(2)
      assert.ok(e1 && e2)
      await r.claim('h-rd', [e1])
      await r.markFailed('h-rd', e1.eventId, 'poison', false)
      assert.equal((await r.claim('h-rd', [e2])).get(e2.eventId), 'parked')
      // The operator retries the newer one only: it must not overtake the failed older one.
      assert.equal(await r.retryParked('h-rd', [e2.eventId], 'tester'), 1)
      assert.deepEqual(await r.claimRetries('h-rd', 10), [])
      assert.equal((await r.status(e2.eventId))[0]?.status, 'parked')
      assert.equal(await r.retryParked('h-rd', [e1.eventId, e2.eventId], 'tester'), 2)
      assert.deepEqual(
        (await r.claimRetries('h-rd', 10)).map((x) => x.seq),
        [1],
      )
      // A redelivery of the newer one waits too.
      assert.equal((await r.claim('h-rd', [e2])).get(e2.eventId), 'in_progress')
    })

    test('the claims of an owner that never registered are freed by their lease only', async () => {
      const unregistered = registry('unregistered')
      const other = registry('other-3')
      await other.start()
      const [e] = events(1)
      assert.ok(e)
      assert.equal((await unregistered.claim('h-u', [e])).get(e.eventId), 'claimed')
      assert.equal((await other.claim('h-u', [e])).get(e.eventId), 'in_progress')
    })

    test('park: a claim waits for an operator, and later events of its aggregate park behind it', async () => {
      const r = registry('park')
      await r.start()
      const [e1, e2] = events(2)
      assert.ok(e1 && e2)
      await r.claim('h-pk', [e1])
      assert.equal(await registry('not-owner').park('h-pk', e1.eventId, 'no'), false)
      assert.equal(await r.park('h-pk', e1.eventId, 'needs a human'), true)
      assert.equal((await r.claim('h-pk', [e1])).get(e1.eventId), 'parked')
      assert.equal((await r.claim('h-pk', [e2])).get(e2.eventId), 'parked')
      assert.deepEqual(
        (await r.listParked('h-pk')).map((p) => [p.seq, p.lastError]),
        [
          [1, 'needs a human'],
          [2, 'an earlier event of this aggregate failed or is parked'],
        ],
      )
    })

    test('a retryable failure releases the claim for the next delivery; skipping a parked event lets others flow', async () => {
      const r = registry('retry')
      await r.start()
      const [e1, e2] = events(2)
      assert.ok(e1 && e2)
      await r.claim('h-rt', [e1])
      await r.markFailed('h-rt', e1.eventId, 'transient', true)
      assert.equal((await r.claim('h-rt', [e1])).get(e1.eventId), 'claimed')
      await r.markFailed('h-rt', e1.eventId, 'poison', false)
      assert.equal((await r.claim('h-rt', [e2])).get(e2.eventId), 'parked')
      assert.equal(await r.skipParked('h-rt', [e1.eventId], 'tester'), 1)
      assert.equal(await r.retryParked('h-rt', [e2.eventId], 'tester'), 1)
      assert.equal((await r.claim('h-rt', [e2])).get(e2.eventId), 'claimed')
      assert.equal((await r.claim('h-rt', [e1])).get(e1.eventId), 'duplicate')
    })

    test("mark_done in the side effect's transaction: rollback leaves neither, commit leaves both", async () => {
      const r = registry('tx')
      await r.start()
      const table = `${world().schema}.side_effects`
      await world().sql.exec(`CREATE TABLE IF NOT EXISTS ${table} (event_id text PRIMARY KEY)`)
      const [e] = events(1)
      assert.ok(e)
      await r.claim('h-tx', [e])
      await assert.rejects(
        world().sql.transaction(async (tx) => {
          await tx.query(`INSERT INTO ${table} VALUES ($1)`, [e.eventId])
          await r.markDone('h-tx', [e.eventId], tx)
          throw new Error('crash before commit')
        }),
        /crash before commit/,
      )
      assert.equal(
        (await world().sql.query(`SELECT 1 FROM ${table} WHERE event_id = $1`, [e.eventId])).length,
        0,
      )
      assert.equal((await r.status(e.eventId))[0]?.status, 'processing')
      await world().sql.transaction(async (tx) => {
        await tx.query(`INSERT INTO ${table} VALUES ($1)`, [e.eventId])
        const marked = await r.markDone('h-tx', [e.eventId], tx)
        assert.equal(marked.size, 1)
      })
      assert.equal(
        (await world().sql.query(`SELECT 1 FROM ${table} WHERE event_id = $1`, [e.eventId])).length,
        1,
      )
      assert.equal((await r.status(e.eventId))[0]?.status, 'done')
    })

    test('claim, side effect and mark_done in one transaction: a rollback leaves no claim, and a claimer elsewhere waits for the commit, then finds them done (C1, C4)', async () => {
      const a = registry('one-tx')
      const b = createProcessedEventRegistry({
        sql: world().secondSql,
        schema: world().schema,
        member: 'other',
      })
      await a.start()
      await b.start()
      const table = `${world().schema}.one_tx_effects`
      await world().sql.exec(`CREATE TABLE IF NOT EXISTS ${table} (event_id text PRIMARY KEY)`)
      const batch = Array.from({ length: 5 }, () => events(1)[0] as ClaimInput)
      const ids = batch.map((e) => e.eventId)
      await assert.rejects(
        world().sql.transaction(async (tx) => {
          const got = await a.claim('h-one-tx', batch, tx)
          assert.deepEqual([...got.values()], Array(5).fill('claimed'))
          for (const id of ids) await tx.query(`INSERT INTO ${table} VALUES ($1)`, [id])
          throw new Error('crash before commit')
        }),
        /crash before commit/,
      )
      for (const id of ids) assert.deepEqual(await a.status(id), [], 'no claim left behind')

      let theirs: Promise<Map<string, string>> | undefined
      await world().sql.transaction(async (tx) => {
        const got = await a.claim('h-one-tx', batch, tx)
        assert.deepEqual([...got.values()], Array(5).fill('claimed'))
        theirs = b.claim('h-one-tx', batch)
        let settled = false
        void theirs.then(() => (settled = true))
        await new Promise((r) => setTimeout(r, 300))
        assert.equal(settled, false, 'the other claimer waits for this transaction')
        for (const id of ids) await tx.query(`INSERT INTO ${table} VALUES ($1)`, [id])
        assert.equal((await a.markDone('h-one-tx', ids, tx)).size, 5)
      })
      const other = await (theirs as Promise<Map<string, string>>)
      assert.deepEqual([...other.values()], Array(5).fill('duplicate'))
      const rows = await world().sql.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM ${table} WHERE event_id = ANY ($1::text[])`,
        [ids],
      )
      assert.equal(rows[0]?.n, 5)
      for (const id of ids) assert.equal((await a.status(id))[0]?.status, 'done')
    })

    test('claims in the applying transaction: the outcomes of claim; new claims get one row, done, when recorded; a rollback leaves nothing; a claimer elsewhere waits, then finds them done (C1, C3, C4)', async () => {
      const r = registry('in-tx')
      const other = registry('in-tx-other')
      const b = createProcessedEventRegistry({
        sql: world().secondSql,
        schema: world().schema,
        member: 'in-tx-b',
      })
      await r.start()
      await other.start()
      await b.start()
      const [fresh1, fresh2] = events(2)
      const [done1, done2] = events(2)
      const [failed1, behind2] = events(2)
      const [busy1, busy2] = events(2)
      const [ok1, released2] = events(2)
      assert.ok(fresh1 && fresh2 && done1 && done2 && failed1 && behind2)
      assert.ok(busy1 && busy2 && ok1 && released2)
      const replayedOld = { ...done1, eventId: randomUUID() }
      const history = async (h: string) => {
        for (const e of [done1, ok1]) {
          await r.claim(h, [e])
          assert.equal((await r.markDone(h, [e.eventId])).size, 1)
        }
        await r.claim(h, [failed1])
        await r.markFailed(h, failed1.eventId, 'boom', false)
        assert.equal((await other.claim(h, [busy1])).get(busy1.eventId), 'claimed')
        await r.claim(h, [released2])
        await r.markFailed(h, released2.eventId, 'transient', true)
      }
      await history('h-in-tx')
      await history('h-in-tx-plain')
      const batch = [fresh2, fresh1, done2, replayedOld, behind2, busy2, released2]
      const input = (id: string) => batch.find((e) => e.eventId === id) as ClaimInput
      const rowsOf = async (id: string) =>
        (await r.status(id)).filter((x) => x.handler === 'h-in-tx')
      const expected = {
        [fresh1.eventId]: 'claimed',
        [fresh2.eventId]: 'in_progress',
        [done2.eventId]: 'claimed',
        [replayedOld.eventId]: 'stale',
        [behind2.eventId]: 'parked',
        [busy2.eventId]: 'in_progress',
        [released2.eventId]: 'claimed',
      }
      assert.deepEqual(Object.fromEntries(await r.claim('h-in-tx-plain', batch)), expected)

      // Rolled back after recording: nothing of it is left.
      await assert.rejects(
        world().sql.transaction(async (tx) => {
          const { outcomes, deferred } = await r.claimInTransaction('h-in-tx', batch, tx)
          assert.deepEqual(Object.fromEntries(outcomes), expected)
          assert.deepEqual([...deferred].sort(), [fresh1.eventId, done2.eventId].sort())
          assert.equal((await r.recordDone('h-in-tx', [...deferred].map(input), tx)).size, 2)
          throw new Error('crash before commit')
        }),
        /crash before commit/,
      )
      for (const e of [fresh1, done2]) assert.deepEqual(await rowsOf(e.eventId), [])

      let theirs: Promise<Map<string, string>> | undefined
      await world().sql.transaction(async (tx) => {
        const { outcomes, deferred } = await r.claimInTransaction('h-in-tx', batch, tx)
        assert.deepEqual(Object.fromEntries(outcomes), expected)
        // The common case is deferred; an open row's aggregate (released2) is claimed as usual.
        assert.deepEqual([...deferred].sort(), [fresh1.eventId, done2.eventId].sort())
        theirs = b.claim('h-in-tx', [fresh1, done2])
        let settled = false
        void theirs.then(() => (settled = true))
        await new Promise((res) => setTimeout(res, 300))
        assert.equal(settled, false, 'the other claimer waits for this transaction')
        const written = await tx.query(
          `SELECT 1 FROM ${world().schema}.processed_events
            WHERE handler = 'h-in-tx' AND event_id = ANY ($1::text[])`,
          [[fresh1.eventId, done2.eventId]],
        )
        assert.equal(written.length, 0, 'no row before it is recorded')
        const recorded = await r.recordDone(
          'h-in-tx',
          [
            { ...fresh1, result: { n: 1 } },
            { ...done2, result: { n: 2 } },
          ],
          tx,
        )
        assert.equal(recorded.size, 2)
        assert.equal((await r.markDone('h-in-tx', [released2.eventId], tx)).size, 1)
      })
      assert.deepEqual(Object.fromEntries(await (theirs as Promise<Map<string, string>>)), {
        [fresh1.eventId]: 'duplicate',
        [done2.eventId]: 'duplicate',
      })
      for (const [e, n] of [
        [fresh1, 1],
        [done2, 2],
      ] as const) {
        const [row] = await rowsOf(e.eventId)
        assert.deepEqual(row && [row.status, row.owner, row.attempts, row.result], [
          'done',
          r.owner,
          1,
          { n },
        ])
      }
      assert.equal((await rowsOf(released2.eventId))[0]?.status, 'done')
      assert.equal((await rowsOf(replayedOld.eventId))[0]?.status, 'skipped_stale')
      // The versions moved: an older event of those aggregates is stale, the next one claimable.
      const late = { ...done1, eventId: randomUUID(), seq: 2 }
      assert.equal((await r.claim('h-in-tx', [late])).get(late.eventId), 'stale')
      assert.equal((await r.claim('h-in-tx', [fresh2])).get(fresh2.eventId), 'claimed')
    })

    test('mark_done of a batch records each event its own result; ids alone share one', async () => {
      const r = registry('results')
      await r.start()
      const batch = Array.from({ length: 4 }, () => events(1)[0] as ClaimInput)
      const [a, b, c, d] = batch
      assert.ok(a && b && c && d)
      await r.claim('h-res', batch)
      const marked = await r.markDone('h-res', [
        { eventId: a.eventId, result: { n: 1 } },
        { eventId: b.eventId, result: null },
        { eventId: c.eventId },
      ])
      assert.equal(marked.size, 3)
      assert.deepEqual((await r.markDone('h-res', [d.eventId], undefined, ['shared'])).size, 1)
      const results = await Promise.all(batch.map(async (e) => (await r.status(e.eventId))[0]))
      assert.deepEqual(
        results.map((row) => [row?.status, row?.result]),
        [
          ['done', { n: 1 }],
          ['done', null],
          ['done', null],
          ['done', ['shared']],
        ],
      )
    })

    test('a batch mixing new events, duplicates, stale events, open rows and several events of one aggregate gets the outcomes and rows of one-by-one claims in sequence order', async () => {
      const r = registry('mix')
      const other = registry('mix-other')
      await r.start()
      await other.start()
      const [fresh1, fresh2, fresh3] = events(3)
      const [done1, done2, next3, next4] = events(4)
      const [failed1, behind2, behind3] = events(3)
      const [busy1, busy2] = events(2)
      const [ok1, released2, after3] = events(3)
      const [twice] = events(1)
      assert.ok(fresh1 && fresh2 && fresh3 && done1 && done2 && next3 && next4)
      assert.ok(failed1 && behind2 && behind3 && busy1 && busy2 && ok1 && released2 && after3)
      // Open rows whose events are not in the batch: a failed one, and another owner's claim.
      const [poisoned1, poisoned2] = events(2)
      const [held1, held2] = events(2)
      assert.ok(twice && poisoned1 && poisoned2 && held1 && held2)
      const replayedOld = { ...done1, eventId: randomUUID() }
      // The same history under two handlers (each handler has its own rows of the same ids).
      const history = async (h: string) => {
        for (const e of [done1, done2, ok1]) {
          assert.equal((await r.claim(h, [e])).get(e.eventId), 'claimed')
          assert.equal((await r.markDone(h, [e.eventId])).size, 1)
        }
        for (const e of [failed1, poisoned1]) {
          await r.claim(h, [e])
          await r.markFailed(h, e.eventId, 'boom', false)
        }
        for (const e of [busy1, held1])
          assert.equal((await other.claim(h, [e])).get(e.eventId), 'claimed')
        await r.claim(h, [released2])
        await r.markFailed(h, released2.eventId, 'transient', true)
      }
      await history('h-mix-batch')
      await history('h-mix-single')
      await history('h-mix-tx')
      const batch = [
        fresh1,
        fresh2,
        fresh3,
        done2,
        replayedOld,
        next3,
        next4,
        failed1,
        behind2,
        behind3,
        busy1,
        busy2,
        released2,
        after3,
        twice,
        twice,
        poisoned2,
        held2,
      ].reverse()
      const expected = new Map<string, string>([
        [fresh1.eventId, 'claimed'],
        [fresh2.eventId, 'in_progress'],
        [fresh3.eventId, 'in_progress'],
        [done2.eventId, 'duplicate'],
        [replayedOld.eventId, 'stale'],
        [next3.eventId, 'claimed'],
        [next4.eventId, 'in_progress'],
        [failed1.eventId, 'failed'],
        [behind2.eventId, 'parked'],
        [behind3.eventId, 'parked'],
        [busy1.eventId, 'in_progress'],
        [busy2.eventId, 'in_progress'],
        [released2.eventId, 'claimed'],
        [after3.eventId, 'in_progress'],
        // The same event twice in one batch: this owner's own claim is claimed again.
        [twice.eventId, 'claimed'],
        [poisoned2.eventId, 'parked'],
        [held2.eventId, 'in_progress'],
      ])

      const together = await r.claim('h-mix-batch', batch)
      const single = new Map<string, string>()
      const inOrder = [...batch].sort((a, b) =>
        a.aggregateId === b.aggregateId ? a.seq - b.seq : a.aggregateId < b.aggregateId ? -1 : 1,
      )
      for (const e of inOrder) {
        const out = (await r.claim('h-mix-single', [e])).get(e.eventId)
        assert.ok(out)
        single.set(e.eventId, out)
      }
      assert.deepEqual(Object.fromEntries(together), Object.fromEntries(expected))
      assert.deepEqual(Object.fromEntries(single), Object.fromEntries(expected))
      // In the applying transaction: the repeated id sends the whole batch to claim_events, so
      // nothing is deferred and the rows are claim's.
      await world().sql.transaction(async (tx) => {
        const { outcomes, deferred } = await r.claimInTransaction('h-mix-tx', batch, tx)
        assert.deepEqual(Object.fromEntries(outcomes), Object.fromEntries(expected))
        assert.equal(deferred.size, 0)
      })

      const rowOf = async (h: string, eventId: string) => {
        const row = (await r.status(eventId)).find((x) => x.handler === h)
        return row && [row.status, row.owner, row.attempts, row.seq, row.lastError]
      }
      for (const e of new Set(batch)) {
        assert.deepEqual(
          await rowOf('h-mix-batch', e.eventId),
          await rowOf('h-mix-single', e.eventId),
          `row of seq ${e.seq} of ${e.aggregateId}`,
        )
        assert.deepEqual(
          await rowOf('h-mix-tx', e.eventId),
          await rowOf('h-mix-single', e.eventId),
          `in a transaction: row of seq ${e.seq} of ${e.aggregateId}`,
        )
      }
      assert.deepEqual(await rowOf('h-mix-batch', replayedOld.eventId), [
        'skipped_stale',
        null,
        0,
        1,
        'sequence 1 is not after 2, already applied',
      ])
      assert.deepEqual(await rowOf('h-mix-batch', twice.eventId), [
        'processing',
        r.owner,
        2,
        1,
        null,
      ])
      assert.equal(await rowOf('h-mix-batch', fresh2.eventId), undefined)
    })

    test('a batch of 1,000 events is claimed and marked done in one statement each', async () => {
      const r = registry('batch')
      await r.start()
      const batch = Array.from({ length: 1_000 }, (_, i) => ({
        eventId: randomUUID(),
        aggregateType: 'Thing',
        aggregateId: `b-${i % 100}`,
        seq: Math.floor(i / 100) + 1,
      }))
      // Per aggregate the sequences are 1..10: the first is claimed, the others wait behind it.
      const out = await r.claim('h-b', batch)
      assert.equal([...out.values()].filter((o) => o === 'claimed').length, 100)
      const firsts = batch.filter((e) => e.seq === 1).map((e) => e.eventId)
      assert.equal((await r.markDone('h-b', firsts)).size, 100)
      const distinct = batch.map((e) => ({
        ...e,
        aggregateId: `${e.aggregateId}-${e.seq}`,
        seq: 1,
        eventId: randomUUID(),
      }))
      const all = await r.claim('h-b2', distinct)
      assert.equal([...all.values()].filter((o) => o === 'claimed').length, 1_000)
      assert.equal(
        (
          await r.markDone(
            'h-b2',
            distinct.map((e) => e.eventId),
          )
        ).size,
        1_000,
      )
    })
  })
