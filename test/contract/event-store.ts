import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'
import { canonicalJson, createEnvelope } from '../../src/core/envelope.ts'
import type { EventEnvelope } from '../../src/core/envelope.ts'
import { CairnError, ErrorCode, isCairnError } from '../../src/core/errors.ts'
import { listAll } from '../../src/core/ports/object-store.ts'
import type { ObjectStore } from '../../src/core/ports/object-store.ts'
import {
  BY_DATE_PREFIX,
  eventKey,
  parseSegmentKey,
  streamPrefix,
} from '../../src/event-store/keys.ts'
import { probeObjectStore } from '../../src/event-store/probe.ts'
import { createSequenceAllocator } from '../../src/sequencing/allocator.ts'
import { migrate } from '../../src/adapters/sql/migrations.ts'
import { contractSuite } from '../support/contract.ts'
import type { AdapterCase } from '../support/contract.ts'
import type { WriteSide } from '../support/write-side.ts'

const command = (
  aggregateId: string,
  data: Record<string, unknown> = {},
  id: string = randomUUID(),
): EventEnvelope =>
  createEnvelope({
    event_id: id,
    event_type: 'CREATE_THING_REQUESTED',
    aggregate_type: 'Thing',
    aggregate_id: aggregateId,
    data,
    metadata: { kind: 'command', command_id: id },
  })

const keysUnder = async (store: ObjectStore, prefix: string): Promise<string[]> => {
  const keys: string[] = []
  for await (const k of listAll(store, prefix)) keys.push(k)
  return keys
}

const rejectsWith = async (promise: Promise<unknown>, code: ErrorCode): Promise<CairnError> => {
  try {
    await promise
  } catch (error) {
    assert.ok(isCairnError(error, code), `expected ${code}, got ${String(error)}`)
    return error
  }
  assert.fail(`expected ${code}, but it succeeded`)
}

/** An object store that, for keys matching `match`, fails as told (fault injection). */
const faulty = (
  inner: ObjectStore,
  match: (key: string) => boolean,
  mode: 'lose-response' | 'refuse',
  times = 1,
): ObjectStore => {
  let left = times
  return {
    ...inner,
    async putIfAbsent(key, body, contentType) {
      if (left > 0 && match(key)) {
        left--
        if (mode === 'lose-response') {
          // The PUT reaches the server and succeeds; its response is lost on the way back.
          await inner.putIfAbsent(key, body, contentType)
          throw new CairnError(ErrorCode.OBJECT_STORE_UNAVAILABLE, 'injected: response lost', {
            retryable: true,
          })
        }
        throw new CairnError(ErrorCode.OBJECT_STORE_ERROR, 'injected: PUT refused', {
          retryable: false,
        })
      }
      return inner.putIfAbsent(key, body, contentType)
    },
  }
}

/** The write side's contract (DESIGN.md W1–W5), for every object store + registry pair. */
export const eventStoreContract = (cases: readonly AdapterCase<WriteSide>[]): void =>
  contractSuite<WriteSide>('event store', cases, (ws) => {
    test('append assigns sequence 1; the stream, the event-id lookup and the by-date index return it', async () => {
      const store = ws().store()
      const agg = `basic-${randomUUID()}`
      const before = Date.now()
      const env = command(agg, { n: 1 })
      const res = await store.append({ envelopes: [env], expectedSeq: 0 })
      assert.equal(res.outcome, 'appended')
      assert.equal(res.envelopes[0]?.sequence_number, 1)
      const stream = await store.readStream('Thing', agg)
      assert.deepEqual(
        stream.map((e) => [e.event_id, e.sequence_number, e.data]),
        [[env.event_id, 1, { n: 1 }]],
      )
      assert.equal((await store.getByEventId(env.event_id))?.event_id, env.event_id)
      assert.equal(await store.getByEventId(randomUUID()), null)
      const dated = []
      for await (const e of store.readByDate(before - 1000, Date.now() + 1000))
        dated.push(e.event_id)
      assert.ok(dated.includes(env.event_id))
      assert.equal(await store.currentSequence('Thing', agg), 1)
      // The stored bytes are the envelope's canonical JSON, its sequence included.
      const raw = await ws().objectStore.get(eventKey('Thing', agg, 1))
      const text = new TextDecoder().decode(raw?.body)
      assert.equal(text, canonicalJson(JSON.parse(text)))
      assert.equal((JSON.parse(text) as { sequence_number: number }).sequence_number, 1)
    })

    test('50 concurrent appends to one aggregate from two allocator instances: sequences 1..50, each once', async () => {
      const a = ws().store()
      const b = ws().store({ sql: ws().secondSql })
      const agg = `race-${randomUUID()}`
      const envs = Array.from({ length: 50 }, (_, i) => command(agg, { i }))
      const results = await Promise.all(
        envs.map((e, i) => (i % 2 === 0 ? a : b).append({ envelopes: [e] })),
      )
      const seqs = results
        .map((r) => r.envelopes[0]?.sequence_number)
        .sort((x, y) => (x ?? 0) - (y ?? 0))
      assert.deepEqual(
        seqs,
        Array.from({ length: 50 }, (_, i) => i + 1),
      )
      const stream = await a.readStream('Thing', agg)
      assert.deepEqual(
        stream.map((e) => e.sequence_number),
        Array.from({ length: 50 }, (_, i) => i + 1),
      )
      assert.deepEqual(new Set(stream.map((e) => e.event_id)), new Set(envs.map((e) => e.event_id)))
      const bySeq = new Map(
        results.map((r) => [r.envelopes[0]?.sequence_number, r.envelopes[0]?.event_id]),
      )
      for (const e of stream) assert.equal(bySeq.get(e.sequence_number), e.event_id)
    })

    test('a wrong expected sequence is a conflict with the actual one; nothing is stored or consumed', async () => {
      const store = ws().store()
      const agg = `occ-${randomUUID()}`
      await store.append({ envelopes: [command(agg)], expectedSeq: 0 })
      await store.append({ envelopes: [command(agg)], expectedSeq: 1 })
      const keysBefore = await keysUnder(ws().objectStore, streamPrefix('Thing', agg))
      const conflict = await rejectsWith(
        store.append({ envelopes: [command(agg)], expectedSeq: 1 }),
        ErrorCode.SEQUENCE_CONFLICT,
      )
      assert.equal(conflict.details.actual_seq, 2)
      assert.equal(conflict.details.expected_seq, 1)
      assert.equal(conflict.details.aggregate_id, agg)
      const again = await rejectsWith(
        store.append({ envelopes: [command(agg)], expectedSeq: 0 }),
        ErrorCode.SEQUENCE_CONFLICT,
      )
      assert.equal(again.details.actual_seq, 2)
      assert.deepEqual(await keysUnder(ws().objectStore, streamPrefix('Thing', agg)), keysBefore)
      assert.equal(await store.currentSequence('Thing', agg), 2)
      const fresh = `occ-new-${randomUUID()}`
      const none = await rejectsWith(
        store.append({ envelopes: [command(fresh)], expectedSeq: 3 }),
        ErrorCode.SEQUENCE_CONFLICT,
      )
      assert.equal(none.details.actual_seq, 0)
      const next = await store.append({ envelopes: [command(agg)], expectedSeq: 2 })
      assert.equal(next.envelopes[0]?.sequence_number, 3)
    })

    test('10 concurrent appends of one event id store one event; every caller gets its sequence, a day later too', async () => {
      let now = Date.now()
      const store = ws().store({ clock: { now: () => now } })
      const agg = `idem-${randomUUID()}`
      await store.append({ envelopes: [command(agg)] })
      const env = command(agg, { v: 1 })
      const results = await Promise.all(
        Array.from({ length: 10 }, () => store.append({ envelopes: [env] })),
      )
      assert.deepEqual(new Set(results.map((r) => r.envelopes[0]?.sequence_number)), new Set([2]))
      assert.equal(results.filter((r) => r.outcome === 'appended').length, 1)
      assert.equal((await keysUnder(ws().objectStore, streamPrefix('Thing', agg))).length, 2)

      now += 24 * 3600 * 1000
      const later = await store.append({
        envelopes: [{ ...env, occurred_at: new Date(now).toISOString() }],
      })
      assert.equal(later.outcome, 'duplicate')
      assert.equal(later.envelopes[0]?.sequence_number, 2)
      assert.equal(later.envelopes[0]?.occurred_at, env.occurred_at)
      assert.equal((await keysUnder(ws().objectStore, streamPrefix('Thing', agg))).length, 2)
      assert.equal(await store.currentSequence('Thing', agg), 2)
    })

    test('a PUT that succeeds but whose response is lost: the append reports success, once', async () => {
      const agg = `lost-${randomUUID()}`
      const lossy = faulty(
        ws().objectStore,
        (k) => k.startsWith(streamPrefix('Thing', agg)),
        'lose-response',
      )
      const store = ws().store({ objectStore: lossy })
      const env = command(agg)
      const res = await store.append({ envelopes: [env], expectedSeq: 0 })
      assert.equal(res.outcome, 'appended')
      assert.equal(res.envelopes[0]?.sequence_number, 1)
      // The client did not hear back either and sends the same command again: success, not a conflict.
      const retry = await store.append({ envelopes: [env], expectedSeq: 0 })
      assert.equal(retry.outcome, 'duplicate')
      assert.equal(retry.envelopes[0]?.sequence_number, 1)
      assert.equal((await keysUnder(ws().objectStore, streamPrefix('Thing', agg))).length, 1)
    })

    test('a lost manifest response is settled the same way: acknowledged once, indexed', async () => {
      const agg = `lost-manifest-${randomUUID()}`
      const lossy = faulty(
        ws().objectStore,
        (k) => k.startsWith('indexes/by-date/'),
        'lose-response',
      )
      const store = ws().store({ objectStore: lossy })
      const before = Date.now()
      const env = command(agg)
      const res = await store.append({ envelopes: [env] })
      assert.equal(res.outcome, 'appended')
      const dated = []
      for await (const e of store.readByDate(before - 1000, Date.now() + 1000))
        dated.push(e.event_id)
      assert.equal(dated.filter((id) => id === env.event_id).length, 1)
    })

    test('aggregate types and ids of any content stay inside their own prefix', async () => {
      const store = ws().store()
      const tag = randomUUID().slice(0, 8)
      const ids = [
        `a/b-${tag}`,
        `a-${tag}`,
        `../../etc/passwd-${tag}`,
        '..',
        '.',
        `ünïcødé ✓ ${tag}`,
        `ctl\u0001\u007f\n-${tag}`,
        `${'x'.repeat(1000)}${tag}`,
        `${'y'.repeat(999)}${tag}`,
        `%2F%2E%2E-${tag}`,
        `~~${tag}`,
      ]
      for (const id of ids) {
        await store.append({ envelopes: [{ ...command(id), aggregate_type: `T/../${tag}` }] })
        await store.append({ envelopes: [{ ...command(id), aggregate_type: `T/../${tag}` }] })
      }
      for (const id of ids) {
        const stream = await store.readStream(`T/../${tag}`, id)
        assert.deepEqual(
          stream.map((e) => [e.aggregate_id, e.sequence_number]),
          [
            [id, 1],
            [id, 2],
          ],
        )
        const key = eventKey(`T/../${tag}`, id, 1)
        assert.ok(Buffer.byteLength(key) < 1024, 'keys stay under the S3 limit')
        assert.ok(key.startsWith('events/'))
        assert.equal(key.split('/').length, 4, `one segment each for type and id: ${key}`)
        assert.ok(
          !key.split('/').some((s) => s === '..' || s === '.' || /[\u0000-\u001f\u007f]/.test(s)),
        )
      }
      for (const k of await keysUnder(ws().objectStore, '')) {
        assert.ok(/^(events|indexes|checkpoints|probes)\//.test(k), `unexpected key ${k}`)
      }
    })

    test('a registry that lost its rows is reseeded from the bucket; nothing is overwritten', async () => {
      const store = ws().store()
      const agg = `reseed-${randomUUID()}`
      for (let i = 0; i < 3; i++) await store.append({ envelopes: [command(agg)] })
      await ws().sql.query(
        `DELETE FROM ${ws().schema}.aggregate_sequences WHERE aggregate_id = $1`,
        [agg],
      )
      await ws().sql.query(`DELETE FROM ${ws().schema}.appended_events WHERE aggregate_id = $1`, [
        agg,
      ])
      const stale = await rejectsWith(
        store.append({ envelopes: [command(agg)], expectedSeq: 0 }),
        ErrorCode.SEQUENCE_CONFLICT,
      )
      assert.equal(stale.details.actual_seq, 3)
      const next = await store.append({ envelopes: [command(agg)], expectedSeq: 3 })
      assert.equal(next.envelopes[0]?.sequence_number, 4)
      const stream = await store.readStream('Thing', agg)
      assert.deepEqual(
        stream.map((e) => e.sequence_number),
        [1, 2, 3, 4],
      )
      assert.equal(new Set(stream.map((e) => e.event_id)).size, 4)
    })

    test('a failed body write leaves no permanent hole: a gap marker closes the slot, later appends go on', async () => {
      const agg = `hole-${randomUUID()}`
      const base = ws().store()
      await base.append({ envelopes: [command(agg)] })
      const broken = ws().store({
        objectStore: faulty(ws().objectStore, (k) => k === eventKey('Thing', agg, 2), 'refuse'),
      })
      const failing = command(agg, { try: 1 })
      const error = await rejectsWith(
        broken.append({ envelopes: [failing] }),
        ErrorCode.APPEND_FAILED,
      )
      assert.equal(error.retryable, true)
      const next = await base.append({ envelopes: [command(agg)], expectedSeq: 2 })
      assert.equal(next.envelopes[0]?.sequence_number, 3)
      assert.deepEqual(
        (await base.readStream('Thing', agg)).map((e) => e.sequence_number),
        [1, 3],
      )
      // The client retries the failed command: it is appended anew, not lost nor duplicated.
      const retried = await base.append({ envelopes: [failing] })
      assert.equal(retried.outcome, 'appended')
      assert.equal(retried.envelopes[0]?.sequence_number, 4)
      assert.deepEqual(
        (await base.readStream('Thing', agg)).map((e) => e.sequence_number),
        [1, 3, 4],
      )
    })

    test('reservations of a writer that crashed are repaired: written bodies indexed, missing ones gapped', async () => {
      const store = ws().store()
      const allocator = createSequenceAllocator({ sql: ws().sql, schema: ws().schema })
      const agg = `crash-${randomUUID()}`
      // A writer reserved two slots and crashed: the first after its body PUT, the second before.
      const [written, lost] = [command(agg, { k: 'written' }), command(agg, { k: 'lost' })]
      const {
        results: [r1],
      } = await allocator.reserve(
        [
          {
            handler: 'write_side:Thing',
            aggregateId: agg,
            expectedSeq: 0,
            eventIds: [written.event_id],
            hashes: [null],
          },
        ],
        [],
      )
      const {
        results: [r2],
      } = await allocator.reserve(
        [
          {
            handler: 'write_side:Thing',
            aggregateId: agg,
            expectedSeq: 1,
            eventIds: [lost.event_id],
            hashes: [null],
          },
        ],
        [],
      )
      assert.equal(r1?.outcome, 'reserved')
      assert.equal(r2?.outcome, 'reserved')
      const body = JSON.stringify({ ...written, sequence_number: 1 })
      await ws().objectStore.putIfAbsent(eventKey('Thing', agg, 1), new TextEncoder().encode(body))
      const before = Date.now()
      const repaired = await store.repairStaleReservations(0)
      assert.ok(repaired.indexed >= 1 && repaired.gaps >= 1)
      const dated = []
      for await (const e of store.readByDate(before - 1000, Date.now() + 1000))
        dated.push(e.event_id)
      assert.ok(dated.includes(written.event_id))
      assert.deepEqual(
        (await store.readStream('Thing', agg)).map((e) => e.event_id),
        [written.event_id],
      )
      const next = await store.append({ envelopes: [command(agg)], expectedSeq: 2 })
      assert.equal(next.envelopes[0]?.sequence_number, 3)
      const stillStale = (await allocator.staleReservations(0, 1000)).map((s) => s.eventId)
      assert.ok(!stillStale.includes(written.event_id) && !stillStale.includes(lost.event_id))
    })

    test("a writer's wall clock decides nothing: 20 minutes behind, it refuses a manifest durable beyond the bound, and its repair is keyed by the database's time", async () => {
      const behind = { now: () => Date.now() - 20 * 60_000 }
      let stall = true
      const slow: ObjectStore = {
        ...ws().objectStore,
        putIfAbsent: async (key, body, contentType) => {
          if (stall && key.startsWith(BY_DATE_PREFIX)) await new Promise((r) => setTimeout(r, 300))
          return ws().objectStore.putIfAbsent(key, body, contentType)
        },
      }
      const store = ws().store({ objectStore: slow, maxManifestDelayMs: 100, clock: behind })
      const env = command(`late-${randomUUID()}`)
      // Measured on the writer's clock against the database's time, this delay looked negative.
      await rejectsWith(store.append({ envelopes: [env] }), ErrorCode.APPEND_FAILED)
      stall = false
      const repaired = await ws().store({ clock: behind }).repairStaleReservations(0)
      assert.equal(repaired.indexed, 1)
      // Both manifests naming the event (the late one, the repair's) carry the database's time: a
      // key 20 minutes old would sort before a publisher's checkpoint and never be published.
      const times: number[] = []
      for (const key of await keysUnder(ws().objectStore, BY_DATE_PREFIX)) {
        const got = await ws().objectStore.get(key)
        if (got !== null && new TextDecoder().decode(got.body).includes(env.event_id))
          times.push((parseSegmentKey(key)?.us ?? 0) / 1000)
      }
      assert.equal(times.length, 2)
      for (const t of times)
        assert.ok(
          Math.abs(t - Date.now()) < 60_000,
          `manifest keyed at ${new Date(t).toISOString()}`,
        )
    })

    test('the same command id with another payload is refused (error mode) or logged (warn mode)', async () => {
      const agg = `mismatch-${randomUUID()}`
      const id = randomUUID()
      await ws()
        .store()
        .append({ envelopes: [command(agg, { v: 1 }, id)] })
      await rejectsWith(
        ws()
          .store()
          .append({ envelopes: [command(agg, { v: 2 }, id)] }),
        ErrorCode.IDEMPOTENCY_MISMATCH,
      )
      const warned = await ws()
        .store({ idempotencyMismatchMode: 'warn' })
        .append({ envelopes: [command(agg, { v: 2 }, id)] })
      assert.equal(warned.outcome, 'duplicate')
      assert.deepEqual(warned.envelopes[0]?.data, { v: 1 })
    })

    test('events are marked stored only once the commit was announced; an announcement that fails leaves them reserved until the repair', async () => {
      const store = ws().store()
      const allocator = createSequenceAllocator({ sql: ws().sql, schema: ws().schema })
      let announce = (): void => {}
      const announced = new Promise<void>((resolve) => (announce = resolve))
      const stop = store.onCommit(() => announced)
      const first = command(`announce-${randomUUID()}`)
      await store.append({ envelopes: [first] })
      // Longer than the 200 ms after which confirmed ids are marked on their own.
      await new Promise((r) => setTimeout(r, 500))
      assert.equal((await allocator.lookup(first.event_id))?.state, 'reserved')
      announce()
      const deadline = Date.now() + 5_000
      while ((await allocator.lookup(first.event_id))?.state !== 'stored' && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 50))
      assert.equal((await allocator.lookup(first.event_id))?.state, 'stored')
      stop()
      const stopFailing = store.onCommit(() => Promise.reject(new Error('NOTIFY failed')))
      const second = command(`announce-${randomUUID()}`)
      await store.append({ envelopes: [second] })
      await new Promise((r) => setTimeout(r, 500))
      assert.equal((await allocator.lookup(second.event_id))?.state, 'reserved')
      // The repair indexes it again and marks it stored even though announcing still fails, so
      // it does not index it over and over.
      await store.repairStaleReservations(0)
      assert.equal((await allocator.lookup(second.event_id))?.state, 'stored')
      stopFailing()
    })

    test('group commit: concurrent appends share reservations and manifests', async () => {
      const store = ws().store()
      const tag = randomUUID()
      const before = Date.now()
      const seen: string[] = []
      const unsubscribe = store.onCommit((n) => seen.push(n.segmentKey))
      const envs = Array.from({ length: 40 }, (_, i) => command(`group-${tag}-${i}`))
      await Promise.all(envs.map((e) => store.append({ envelopes: [e] })))
      unsubscribe()
      assert.ok(seen.length < envs.length, `${seen.length} manifests for ${envs.length} appends`)
      const dated = new Set<string>()
      for await (const e of store.readByDate(before - 1000, Date.now() + 1000))
        dated.add(e.event_id)
      for (const e of envs) assert.ok(dated.has(e.event_id))
    })

    test('under load appends gather into full groups; a slow group holds a lone append back for the overlap time at most', async () => {
      const tag = randomUUID()
      {
        // While a group is in flight (its PUTs take 100 ms), appends that arrive gather into
        // the next group instead of starting groups of one.
        const inner = ws().objectStore
        const slow: ObjectStore = {
          ...inner,
          putIfAbsent: async (key, body, contentType) => {
            await new Promise((r) => setTimeout(r, 100))
            return inner.putIfAbsent(key, body, contentType)
          },
        }
        // A long overlap time, so that a slow machine does not start the next group by age.
        const store = ws().store({ objectStore: slow, groupOverlapAfterMs: 1_000 })
        const seen: number[] = []
        store.onCommit((n) => seen.push(n.entries.length))
        const first = store.append({ envelopes: [command(`gather-${tag}-first`)] })
        await new Promise((r) => setTimeout(r, 2))
        const envs = Array.from({ length: 10 }, (_, i) => command(`gather-${tag}-${i}`))
        await Promise.all([first, ...envs.map((e) => store.append({ envelopes: [e] }))])
        assert.deepEqual(seen, [1, 10], 'the first alone, then the ten together')
        await store.close()
      }
      {
        // The first group's body PUT hangs for a second: a later lone append starts its own
        // group once the first is 10 ms old, and is acknowledged long before the slow one.
        let stall = true
        const inner = ws().objectStore
        const slow: ObjectStore = {
          ...inner,
          putIfAbsent: async (key, body, contentType) => {
            if (stall && key.startsWith('events/')) {
              stall = false
              await new Promise((r) => setTimeout(r, 1_000))
            }
            return inner.putIfAbsent(key, body, contentType)
          },
        }
        const store = ws().store({ objectStore: slow })
        const started = Date.now()
        const first = store.append({ envelopes: [command(`slow-${tag}`)] })
        await new Promise((r) => setTimeout(r, 50))
        await store.append({ envelopes: [command(`lone-${tag}`)] })
        const lone = Date.now() - started
        await first
        assert.ok(lone < 800, `the lone append took ${lone} ms behind a 1 s group`)
        await store.close()
      }
    })

    test('invalid envelopes are refused with every problem named, and nothing is stored', async () => {
      const store = ws().store()
      const bad = {
        ...command('x'),
        occurred_at: 'yesterday',
        metadata: { kind: 'other' },
      } as unknown as EventEnvelope
      const error = await rejectsWith(
        store.append({ envelopes: [bad] }),
        ErrorCode.INVALID_ENVELOPE,
      )
      assert.match(error.message, /occurred_at/)
      assert.match(error.message, /metadata\.kind/)
    })

    test('hostile event ids, unserialisable data and oversized payloads are refused; nothing is written', async () => {
      const store = ws().store({ maxEventBytes: 4096 })
      const agg = `hostile-${randomUUID()}`
      const cases: [EventEnvelope, RegExp][] = [
        [
          { ...command(agg), event_id: 'bad\u0000id' },
          /event_id: must not contain control characters/,
        ],
        [{ ...command(agg), event_id: 'x'.repeat(200) }, /event_id: must be at most 128/],
        [command(agg, { blob: 'x'.repeat(5000) }), /more than the limit of 4096 bytes/],
        [command(agg, { n: Number.NaN }), /NaN/],
        [{ ...command(agg), aggregate_id: '' }, /aggregate_id: must be a non-empty string/],
      ]
      for (const [env, message] of cases) {
        const error = await rejectsWith(
          store.append({ envelopes: [env] }),
          ErrorCode.INVALID_ENVELOPE,
        )
        assert.match(error.message, message)
      }
      assert.deepEqual(await keysUnder(ws().objectStore, streamPrefix('Thing', agg)), [])
      assert.equal(await store.currentSequence('Thing', agg), 0)
    })

    test("the allocator's tables dropped and recreated: appends continue from the bucket", async () => {
      const store = ws().store()
      const agg = `dropped-${randomUUID()}`
      for (let i = 0; i < 3; i++) await store.append({ envelopes: [command(agg)] })
      await store.close()
      // The registry is lost as a whole and recreated empty (a restart runs the migrations).
      await ws().sql.exec(`DROP SCHEMA ${ws().schema} CASCADE`)
      await migrate(ws().sql, ws().schema)
      const fresh = ws().store()
      const next = await fresh.append({ envelopes: [command(agg)] })
      assert.equal(next.envelopes[0]?.sequence_number, 4)
      assert.deepEqual(
        (await fresh.readStream('Thing', agg)).map((e) => e.sequence_number),
        [1, 2, 3, 4],
      )
    })

    test('the backend passes the conformance probe', async () => {
      const report = await probeObjectStore(ws().objectStore)
      assert.deepEqual(report.failed, [], JSON.stringify(report.checks))
    })
  })
