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
  parseSegmentKey,
  segmentKey,
  segmentKeyFloor,
} from '../../src/event-store/keys.ts'
import { encodeSegment, parseSegment, segmentEntry } from '../../src/event-store/segment.ts'
import { reconcileFromBucket } from '../../src/event-store/reconcile.ts'
import { silentLogger } from '../../src/core/ports/logger.ts'
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

type Stored = { event_id: string; aggregate_id: string; sequence_number: number }

/** Every stored line of the segments keyed since `sinceMs` (gap markers skipped). */
const bucketEvents = async (
  store: ObjectStore,
  sinceMs: number,
): Promise<{ key: string; envelope: Stored }[]> => {
  const out: { key: string; envelope: Stored }[] = []
  const floor = segmentKeyFloor((sinceMs - 60_000) * 1000)
  for await (const key of listAll(store, BY_DATE_PREFIX, floor)) {
    const got = await store.get(key)
    if (got === null) continue
    const parsed = parseSegment(got.body)
    if (parsed.kind === 'gap') continue
    for (const line of parsed.lines) out.push({ key, envelope: JSON.parse(line) as Stored })
  }
  return out
}

/** The stored events of one aggregate in the bucket (every copy), as `seq:event_id`, sorted. */
const storedOf = async (store: ObjectStore, agg: string, sinceMs: number): Promise<string[]> =>
  (await bucketEvents(store, sinceMs))
    .filter((e) => e.envelope.aggregate_id === agg)
    .map((e) => `${String(e.envelope.sequence_number).padStart(4, '0')}:${e.envelope.event_id}`)
    .sort()

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
      // The segment holds the envelope's canonical JSON, its sequence included, on its own line,
      // where the stream index says.
      const row = await createSequenceAllocator({ sql: ws().sql, schema: ws().schema }).lookup(
        env.event_id,
      )
      assert.ok(row !== null)
      const raw = await ws().objectStore.get(
        segmentKey(row.segment.atUs, row.segment.writer, row.segment.n),
      )
      assert.ok(raw !== null)
      const parsed = parseSegment(raw.body)
      assert.ok(parsed.kind === 'segment')
      const text = parsed.lines[row.position] ?? ''
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
      const since = Date.now()
      const agg = `occ-${randomUUID()}`
      await store.append({ envelopes: [command(agg)], expectedSeq: 0 })
      await store.append({ envelopes: [command(agg)], expectedSeq: 1 })
      const keysBefore = await storedOf(ws().objectStore, agg, since)
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
      assert.deepEqual(await storedOf(ws().objectStore, agg, since), keysBefore)
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
      const since = now
      const store = ws().store({ clock: { now: () => now } })
      const agg = `idem-${randomUUID()}`
      await store.append({ envelopes: [command(agg)] })
      const env = command(agg, { v: 1 })
      const results = await Promise.all(
        Array.from({ length: 10 }, () => store.append({ envelopes: [env] })),
      )
      assert.deepEqual(new Set(results.map((r) => r.envelopes[0]?.sequence_number)), new Set([2]))
      assert.equal(results.filter((r) => r.outcome === 'appended').length, 1)
      assert.equal((await storedOf(ws().objectStore, agg, since)).length, 2)

      now += 24 * 3600 * 1000
      const later = await store.append({
        envelopes: [{ ...env, occurred_at: new Date(now).toISOString() }],
      })
      assert.equal(later.outcome, 'duplicate')
      assert.equal(later.envelopes[0]?.sequence_number, 2)
      assert.equal(later.envelopes[0]?.occurred_at, env.occurred_at)
      assert.equal((await storedOf(ws().objectStore, agg, since)).length, 2)
      assert.equal(await store.currentSequence('Thing', agg), 2)
    })

    test('a segment PUT that succeeds but whose response is lost: acknowledged once, stored once, indexed once', async () => {
      const agg = `lost-${randomUUID()}`
      const lossy = faulty(ws().objectStore, (k) => k.startsWith(BY_DATE_PREFIX), 'lose-response')
      const store = ws().store({ objectStore: lossy })
      const before = Date.now()
      const env = command(agg)
      const res = await store.append({ envelopes: [env], expectedSeq: 0 })
      assert.equal(res.outcome, 'appended')
      assert.equal(res.envelopes[0]?.sequence_number, 1)
      // The client did not hear back either and sends the same command again: success, not a conflict.
      const retry = await store.append({ envelopes: [env], expectedSeq: 0 })
      assert.equal(retry.outcome, 'duplicate')
      assert.equal(retry.envelopes[0]?.sequence_number, 1)
      assert.deepEqual(await storedOf(ws().objectStore, agg, before), [`0001:${env.event_id}`])
      const dated = []
      for await (const e of store.readByDate(before - 1000, Date.now() + 1000))
        dated.push(e.event_id)
      assert.equal(dated.filter((id) => id === env.event_id).length, 1)
    })

    test('aggregate types and ids of any content never reach a key, and read back as they are', async () => {
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
      }
      for (const k of await keysUnder(ws().objectStore, '')) {
        assert.ok(/^(indexes\/by-date|checkpoints|probes)\//.test(k), `unexpected key ${k}`)
        assert.ok(!k.includes(tag), `an aggregate id reached a key: ${k}`)
        assert.ok(Buffer.byteLength(k) < 1024)
      }
    })

    test('a registry that lost its rows refuses appends, names the command, and continues from the bucket once reconciled', async () => {
      const store = ws().store()
      const since = Date.now()
      const agg = `reseed-${randomUUID()}`
      for (let i = 0; i < 3; i++) await store.append({ envelopes: [command(agg)] })
      // PostgreSQL lost what the write side knew: its tables created anew, empty.
      const { sql, schema } = ws()
      await sql.exec(
        `DROP TABLE ${schema}.appended_events, ${schema}.segments, ${schema}.aggregate_sequences, ${schema}.registry_meta CASCADE`,
      )
      await sql.exec(`DELETE FROM ${schema}.schema_migrations WHERE version LIKE '001%'`)
      await migrate(sql, schema)
      const refused = await rejectsWith(
        store.append({ envelopes: [command(agg)], expectedSeq: 0 }),
        ErrorCode.REGISTRY_BEHIND_BUCKET,
      )
      assert.match(refused.message, /cairn reconcile/)
      // A writer that starts now refuses too, before it reserves anything.
      await rejectsWith(
        ws()
          .store()
          .append({ envelopes: [command(agg)] }),
        ErrorCode.REGISTRY_BEHIND_BUCKET,
      )
      // Nothing was stored beyond what the bucket held (the running writer's reservation, made
      // before it noticed, is never written).
      assert.equal((await storedOf(ws().objectStore, agg, since)).length, 3)
      const progress: number[] = []
      const result = await reconcileFromBucket({
        store: ws().objectStore,
        allocator: createSequenceAllocator({ sql, schema }),
        handlerPrefix: 'write_side',
        boundMs: 100,
        log: silentLogger,
        onProgress: (p) => progress.push(p.segments),
      })
      assert.ok(result.events >= 3)
      assert.deepEqual(result.clashes, [])
      assert.ok(progress.length > 0)
      assert.equal(await store.currentSequence('Thing', agg), 3)
      // Writers notice the new registry and go on from the bucket's truth.
      await new Promise((r) => setTimeout(r, 2_100))
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
      // Every sequence is stored once in the bucket.
      const stored = (await storedOf(ws().objectStore, agg, since)).map((x) => x.split(':')[0])
      assert.deepEqual(stored, ['0001', '0002', '0003', '0004'])
    })

    test('a registry taken back in place (a logical restore, no server restart): the next append is refused, nothing stored twice', async () => {
      const store = ws().store()
      const since = Date.now()
      const agg = `rewound-${randomUUID()}`
      const { sql, schema } = ws()
      await store.append({ envelopes: [command(agg)] })
      const [mark] = await sql.query<{ id: string }>(`SELECT max(id) AS id FROM ${schema}.segments`)
      const upTo = Number(mark?.id)
      await store.append({ envelopes: [command(agg)] })
      await store.append({ envelopes: [command(agg)] })
      // The registry's rows as they were after the first append, its identity unchanged.
      await sql.exec(`DELETE FROM ${schema}.appended_events WHERE segment_id > ${upTo}`)
      await sql.exec(`DELETE FROM ${schema}.segments WHERE id > ${upTo}`)
      await sql.query(
        `UPDATE ${schema}.aggregate_sequences SET last_sequence = 1 WHERE aggregate_id = $1`,
        [agg],
      )
      await sql.exec(`ALTER TABLE ${schema}.segments ALTER COLUMN id RESTART WITH ${upTo + 1}`)
      await rejectsWith(
        store.append({ envelopes: [command(agg)] }),
        ErrorCode.REGISTRY_BEHIND_BUCKET,
      )
      assert.deepEqual(
        (await storedOf(ws().objectStore, agg, since)).map((x) => x.split(':')[0]),
        ['0001', '0002', '0003'],
      )
      await reconcileFromBucket({
        store: ws().objectStore,
        allocator: createSequenceAllocator({ sql, schema }),
        handlerPrefix: 'write_side',
        boundMs: 100,
        log: silentLogger,
      })
    })

    test('a failed segment write leaves no permanent hole: a gap marker closes its key, later appends go on', async () => {
      const agg = `hole-${randomUUID()}`
      const base = ws().store()
      await base.append({ envelopes: [command(agg)] })
      const broken = ws().store({
        objectStore: faulty(ws().objectStore, (k) => k.endsWith('.ndjson'), 'refuse'),
      })
      const failing = command(agg, { try: 1 })
      const error = await rejectsWith(
        broken.append({ envelopes: [failing] }),
        ErrorCode.APPEND_FAILED,
      )
      assert.equal(error.retryable, true)
      const allocator = createSequenceAllocator({ sql: ws().sql, schema: ws().schema })
      const row = await allocator.lookup(failing.event_id)
      assert.equal(row?.state, 'gap')
      assert.ok(row !== null)
      const marker = await ws().objectStore.get(
        segmentKey(row.segment.atUs, row.segment.writer, row.segment.n),
      )
      assert.ok(marker !== null && parseSegment(marker.body).kind === 'gap')
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

    test('segments of a writer that crashed are repaired: a written one indexed again, a missing one closed', async () => {
      const store = ws().store()
      const allocator = createSequenceAllocator({ sql: ws().sql, schema: ws().schema })
      const agg = `crash-${randomUUID()}`
      // A writer reserved two segments and crashed: the first after its PUT, the second before.
      const [written, lost] = [command(agg, { k: 'written' }), command(agg, { k: 'lost' })]
      const reserve = (env: EventEnvelope, expectedSeq: number, n: number) =>
        allocator.reserve(
          [
            {
              handler: 'write_side:Thing',
              aggregateId: agg,
              expectedSeq,
              eventIds: [env.event_id],
              hashes: [null],
            },
          ],
          [],
          'crashed',
          n,
        )
      const first = await reserve(written, 0, 1)
      const second = await reserve(lost, 1, 2)
      assert.equal(first.results[0]?.outcome, 'reserved')
      assert.equal(second.results[0]?.outcome, 'reserved')
      const stored = { ...written, sequence_number: 1 }
      await ws().objectStore.putIfAbsent(
        segmentKey(first.atUs, 'crashed', 1),
        encodeSegment('crashed', new Date().toISOString(), [
          segmentEntry(stored, canonicalJson(stored)),
        ]),
      )
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
      assert.equal((await allocator.lookup(lost.event_id))?.state, 'gap')
      const gap = await ws().objectStore.get(segmentKey(second.atUs, 'crashed', 2))
      assert.ok(gap !== null && parseSegment(gap.body).kind === 'gap')
      const next = await store.append({ envelopes: [command(agg)], expectedSeq: 2 })
      assert.equal(next.envelopes[0]?.sequence_number, 3)
      const stillStale = (await allocator.staleSegments(0, 1000)).map((x) => x.id)
      assert.ok(!stillStale.includes(first.segmentId ?? -1))
      assert.ok(!stillStale.includes(second.segmentId ?? -1))
    })

    test("a writer's wall clock decides nothing: 20 minutes behind, it refuses a segment durable beyond the bound, and its repair is keyed by the database's time", async () => {
      const behind = { now: () => Date.now() - 20 * 60_000 }
      let stall = true
      const slow: ObjectStore = {
        ...ws().objectStore,
        putIfAbsent: async (key, body, contentType) => {
          if (stall && key.startsWith(BY_DATE_PREFIX)) await new Promise((r) => setTimeout(r, 300))
          return ws().objectStore.putIfAbsent(key, body, contentType)
        },
      }
      const store = ws().store({ objectStore: slow, maxSegmentDelayMs: 100, clock: behind })
      const env = command(`late-${randomUUID()}`)
      // Measured on the writer's clock against the database's time, this delay looked negative.
      await rejectsWith(store.append({ envelopes: [env] }), ErrorCode.APPEND_FAILED)
      stall = false
      const repaired = await ws().store({ clock: behind }).repairStaleReservations(0)
      assert.equal(repaired.indexed, 1)
      // Both segments holding the event (the late one, the repair's copy) carry the database's
      // time: a key 20 minutes old would sort before a publisher's checkpoint and never be published.
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
          `segment keyed at ${new Date(t).toISOString()}`,
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

    test('group commit: concurrent appends share reservations and segments', async () => {
      const store = ws().store()
      const tag = randomUUID()
      const before = Date.now()
      const seen: string[] = []
      const unsubscribe = store.onCommit((n) => seen.push(n.segmentKey))
      const envs = Array.from({ length: 40 }, (_, i) => command(`group-${tag}-${i}`))
      await Promise.all(envs.map((e) => store.append({ envelopes: [e] })))
      unsubscribe()
      assert.ok(seen.length < envs.length, `${seen.length} segments for ${envs.length} appends`)
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
        // The first group's segment PUT hangs for a second: a later lone append starts its own
        // group once the first is 10 ms old, and is acknowledged long before the slow one.
        let stall = true
        const inner = ws().objectStore
        const slow: ObjectStore = {
          ...inner,
          putIfAbsent: async (key, body, contentType) => {
            if (stall && key.startsWith(BY_DATE_PREFIX)) {
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
      const since = Date.now()
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
      assert.deepEqual(await storedOf(ws().objectStore, agg, since), [])
      assert.equal(await store.currentSequence('Thing', agg), 0)
    })

    test("the registry's schema dropped and recreated: a new writer refuses before it reserves anything", async () => {
      const store = ws().store()
      const agg = `dropped-${randomUUID()}`
      for (let i = 0; i < 3; i++) await store.append({ envelopes: [command(agg)] })
      await store.close()
      // The registry is lost as a whole and recreated empty (a restart runs the migrations).
      await ws().sql.exec(`DROP SCHEMA ${ws().schema} CASCADE`)
      await migrate(ws().sql, ws().schema)
      const fresh = ws().store()
      const refused = await rejectsWith(
        fresh.append({ envelopes: [command(agg)] }),
        ErrorCode.REGISTRY_BEHIND_BUCKET,
      )
      assert.match(refused.message, /cairn reconcile --yes/)
      assert.equal(await fresh.currentSequence('Thing', agg), 0)
      const [row] = await ws().sql.query<{ n: string }>(
        `SELECT count(*) AS n FROM ${ws().schema}.segments`,
      )
      assert.equal(Number(row?.n), 0, 'nothing reserved')
      await reconcileFromBucket({
        store: ws().objectStore,
        allocator: createSequenceAllocator({ sql: ws().sql, schema: ws().schema }),
        handlerPrefix: 'write_side',
        boundMs: 100,
        log: silentLogger,
      })
      assert.equal(await fresh.currentSequence('Thing', agg), 3)
    })

    test('the backend passes the conformance probe', async () => {
      const report = await probeObjectStore(ws().objectStore)
      assert.deepEqual(report.failed, [], JSON.stringify(report.checks))
    })
  })
