import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { canonicalJson, createEnvelope } from '../../src/core/envelope.ts'
import type { EventEnvelope } from '../../src/core/envelope.ts'
import { CairnError, ErrorCode } from '../../src/core/errors.ts'
import type { Bus, BusProducer, DeliveredMessage } from '../../src/core/ports/bus.ts'
import type { KeyClock } from '../../src/core/ports/clock.ts'
import type { ObjectStore } from '../../src/core/ports/object-store.ts'
import type { EventStore } from '../../src/event-store/event-store.ts'
import { CHECKPOINT_KEY, QUARANTINE_PREFIX, segmentKey } from '../../src/event-store/keys.ts'
import { encodeSegment, segmentEntry } from '../../src/event-store/segment.ts'
import { loadCheckpoint } from '../../src/publisher/checkpoint.ts'
import { listPublishers, presenceRecorder } from '../../src/publisher/presence.ts'
import { createPublisher } from '../../src/publisher/publisher.ts'
import type { Publisher, PublisherOptions } from '../../src/publisher/publisher.ts'
import { createSequenceAllocator, databaseClock } from '../../src/sequencing/allocator.ts'
import { collect, collectDistinct, eventually } from '../support/collect.ts'
import type { AdapterCase } from '../support/contract.ts'
import { uniqueName } from '../support/services.ts'
import { storedLine } from '../support/stored-bytes.ts'
import type { WriteSide } from '../support/write-side.ts'

export type PublisherWorld = { readonly ws: WriteSide; readonly bus: Bus; close(): Promise<void> }

/** Publishers a test started, closed after it whatever happened (a hung one is left behind). */
const started: Publisher[] = []
const closeStarted = async (): Promise<void> => {
  for (const p of started.splice(0)) {
    await Promise.race([p.close(), new Promise((r) => setTimeout(r, 2_000))])
  }
}

const event = (
  topic: string,
  aggregateId: string,
  data: Record<string, unknown> = {},
): EventEnvelope =>
  createEnvelope({
    event_type: 'THING_HAPPENED',
    aggregate_type: 'Thing',
    aggregate_id: aggregateId,
    data,
    metadata: {
      kind: 'domain',
      kafka_topic: topic,
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
    },
  })

/** Counts object-store requests by kind (P4). */
const counting = (inner: ObjectStore) => {
  const counts = { list: 0, get: 0, put: 0 }
  const store: ObjectStore = {
    ...inner,
    list: (...a) => (counts.list++, inner.list(...a)),
    get: (...a) => (counts.get++, inner.get(...a)),
    putIfAbsent: (...a) => (counts.put++, inner.putIfAbsent(...a)),
    putIfMatch: (...a) => (counts.put++, inner.putIfMatch(...a)),
  }
  return { store, counts }
}

/**
 * Per aggregate (the message key), sequence numbers arrive in ascending order (P2); with
 * `firstSeen`, only each event's first delivery counts (a redelivery may repeat an older one).
 */
const assertOrdered = (
  got: readonly DeliveredMessage[],
  aggs: readonly string[],
  options: { readonly firstSeen?: boolean } = {},
): void => {
  for (const agg of aggs) {
    const all = got.filter((m) => m.key === agg).map((m) => Number(m.headers.sequence_number))
    const seqs = options.firstSeen === true ? all.filter((x, i) => all.indexOf(x) === i) : all
    assert.deepEqual(
      seqs,
      [...seqs].sort((a, b) => a - b),
      `order of ${agg}`,
    )
  }
}

const fast: Partial<PublisherOptions> = {
  pollIntervalMs: 100,
  settleMs: 400,
  heartbeatMs: 200,
  takeoverAfterMs: 1_000,
  metricsLogIntervalMs: 60_000,
}

const run = (p: Publisher): Publisher => {
  started.push(p)
  void p.run()
  return p
}

const startPublisher = (
  world: PublisherWorld,
  options: Partial<PublisherOptions> = {},
): Publisher =>
  run(
    createPublisher({
      objectStore: world.ws.objectStore,
      keyClock: databaseClock(world.ws.sql),
      bus: world.bus,
      ...fast,
      ...options,
    }),
  )

/**
 * An operator's reset of the checkpoint to the beginning, unowned and without its dedup snapshot.
 * A compare-and-swap: when a running publisher saved in between, read again and retry, as the
 * operator does.
 */
const rollBackCheckpoint = async (store: ObjectStore): Promise<void> => {
  for (let attempt = 0; attempt < 20; attempt++) {
    const current = await store.get(CHECKPOINT_KEY)
    const reset = {
      last_index_key: null,
      last_timestamp_ms: 0,
      updated_at: new Date().toISOString(),
      recent_event_ids: [],
      owner: '',
    }
    const wrote = await store.putIfMatch(
      CHECKPOINT_KEY,
      new TextEncoder().encode(JSON.stringify(reset)),
      current?.etag ?? null,
    )
    if (wrote.outcome === 'written') return
  }
  assert.fail(
    'the checkpoint could not be reset: a publisher saved it between every read and write',
  )
}

/** The writer id of the other process in these tests (a segment key's writer part). */
const ELSEWHERE = 'elsewhere'

/**
 * Another writer reserves sequence 1 of `agg` (a `Thing`) for `eventId`, in a segment of its own,
 * and writes nothing yet. Returns that segment's key.
 */
const reserveFirstElsewhere = async (
  w: PublisherWorld,
  agg: string,
  eventId: string,
): Promise<string> => {
  const allocator = createSequenceAllocator({ sql: w.ws.sql, schema: w.ws.schema })
  const { atUs, segmentId, results } = await allocator.reserve(
    [
      {
        handler: 'write_side:Thing',
        aggregateId: agg,
        expectedSeq: 0,
        eventIds: [eventId],
        hashes: [null],
      },
    ],
    [],
    ELSEWHERE,
    0,
  )
  assert.equal(results[0]?.outcome, 'reserved')
  assert.ok(segmentId !== null)
  return segmentKey(atUs, ELSEWHERE, 0)
}

const appendAll = async (store: EventStore, envs: readonly EventEnvelope[]): Promise<void> => {
  await Promise.all(envs.map((e) => store.append({ envelopes: [e] })))
}

/** The publisher's contract (DESIGN.md P1–P4) on every bucket + registry + bus combination. */
export const publisherContract = (cases: readonly AdapterCase<PublisherWorld>[]): void => {
  for (const c of cases) {
    void describe(`publisher on ${c.name}`, () => {
      const withWorld = (name: string, fn: (w: PublisherWorld) => Promise<void>): void =>
        void test(name, async () => {
          const world = await c.create()
          try {
            await fn(world)
          } finally {
            await closeStarted()
            await world.close()
          }
        })

      withWorld(
        "noticed commits' entries are kept up to a size: the oldest is forgotten and its segment read when listed",
        async (w) => {
          const topic = uniqueName('pub-noted')
          const store = w.ws.store()
          const payload = 'x'.repeat(1_000)
          // Room for the entries of two of the three commits (each body is over 1,000 units).
          const publisher = createPublisher({
            objectStore: w.ws.objectStore,
            bus: w.bus,
            keyClock: databaseClock(w.ws.sql),
            ...fast,
            notedMaxChars: 2_900,
          })
          store.onCommit((n) => publisher.noteCommit(n))
          // Noticed before the publisher runs (as a standby would hear them): nothing reads them yet.
          for (let i = 0; i < 3; i++) {
            await store.append({ envelopes: [event(topic, `agg-${randomUUID()}`, { i, payload })] })
          }
          run(publisher)
          const got = await collectDistinct(w.bus, topic, 3)
          assert.equal(got.length, 3)
          assert.equal(publisher.metrics().segmentReads, 1, 'the forgotten one was read')
          await publisher.close()
        },
      )

      withWorld(
        'every appended event reaches its topic, unchanged, keyed, with headers, in per-aggregate order',
        async (w) => {
          const topic = uniqueName('pub')
          const store = w.ws.store()
          const aggs = Array.from({ length: 5 }, () => `agg-${randomUUID()}`)
          const publisher = startPublisher(w)
          store.onCommit((n) => publisher.noteCommit(n))
          const envs = Array.from({ length: 60 }, (_, i) =>
            event(topic, aggs[i % 5] as string, { i }),
          )
          for (let i = 0; i < envs.length; i += 12) await appendAll(store, envs.slice(i, i + 12))
          const got = await collectDistinct(w.bus, topic, 60)
          await publisher.close()
          assert.equal(new Set(got.map((m) => m.headers.event_id)).size, 60)
          for (const agg of aggs) {
            const stream = await store.readStream('Thing', agg)
            const bodies = new Map(stream.map((e) => [e.event_id, JSON.stringify(e)]))
            assertOrdered(got, [agg])
            for (const msg of got.filter((m) => m.key === agg)) {
              const value = new TextDecoder().decode(msg.value)
              assert.deepEqual(
                JSON.parse(value),
                JSON.parse(bodies.get(msg.headers.event_id as string) as string),
              )
              assert.equal(msg.headers.event_type, 'THING_HAPPENED')
              assert.match(msg.headers.traceparent ?? '', /^00-0af7/)
            }
          }
          // The stored bytes, exactly: the value is the envelope's line of its segment in the bucket.
          const first = got[0]
          assert.ok(first)
          const stored = await storedLine(w.ws, first.headers.event_id as string)
          assert.ok(stored !== null, 'the event is in its segment')
          assert.equal(new TextDecoder().decode(first.value), stored)
        },
      )

      withWorld(
        'the checkpoint moves only over settled, delivered keys; a restart republishes nothing it remembers',
        async (w) => {
          const topic = uniqueName('cp')
          const store = w.ws.store()
          const envs = Array.from({ length: 30 }, (_, i) => event(topic, `cp-${i % 3}`, { i }))
          await appendAll(store, envs)
          const first = startPublisher(w)
          await eventually(() => first.metrics().published >= 30, 'first publication')
          // Wait until the keys are settled and the checkpoint has moved past them.
          await eventually(async () => {
            const { checkpoint } = await loadCheckpoint(w.ws.objectStore)
            return (
              checkpoint !== null &&
              checkpoint.last_index_key !== null &&
              checkpoint.recent_event_ids.length >= 30
            )
          }, 'checkpoint saved')
          await first.close()
          const { checkpoint } = await loadCheckpoint(w.ws.objectStore)
          assert.ok(checkpoint)
          assert.ok(
            checkpoint.last_timestamp_ms <= Date.now() - 400,
            'never past the settle watermark',
          )
          assert.equal(checkpoint.owner, '', 'a clean stop leaves the checkpoint unowned')
          const second = startPublisher(w)
          // It takes over at once (not after takeoverAfterMs), and republishes nothing.
          await eventually(() => second.metrics().role === 'active', 'active', 500)
          await new Promise((r) => setTimeout(r, 600))
          assert.equal(second.metrics().published, 0, 'nothing republished after a clean restart')
          await second.close()
          const got = await collect(w.bus, topic, (ms) => ms.length >= 30, 3_000)
          assert.equal(got.length, 30)
        },
      )

      withWorld(
        'with segments newer than the watermark, the checkpoint still moves up to the watermark (below them)',
        async (w) => {
          const topic = uniqueName('floor')
          const store = w.ws.store()
          // Nothing settles during the test: every segment stays newer than the watermark,
          // including at the publisher's first listing.
          await appendAll(
            store,
            Array.from({ length: 5 }, (_, i) => event(topic, `fl-${i}`, { i })),
          )
          const publisher = startPublisher(w, { settleMs: 60_000 })
          await eventually(() => publisher.metrics().published >= 5, 'publication')
          await publisher.close()
          const keys = (await w.ws.objectStore.list('indexes/by-date/')).keys
          assert.ok(keys.length >= 1)
          const { checkpoint } = await loadCheckpoint(w.ws.objectStore)
          assert.ok(checkpoint)
          assert.ok(checkpoint.last_index_key !== null, 'a position once a listing has run')
          assert.ok(checkpoint.last_index_key < (keys[0] as string), 'below every unsettled key')
          assert.ok(checkpoint.last_timestamp_ms <= Date.now() - 59_000, 'at the watermark')
          // A restart from there finds the segments again and remembers it published them.
          const second = startPublisher(w, { settleMs: 60_000 })
          await eventually(() => second.metrics().dedupSkipped >= 5, 'the segments seen again')
          assert.equal(second.metrics().published, 0, 'nothing republished after a clean restart')
        },
      )

      withWorld(
        'a checkpoint rolled back by hand is adopted and republishes; every event still arrives',
        async (w) => {
          const topic = uniqueName('rollback')
          const store = w.ws.store()
          const publisher = startPublisher(w)
          const envs = Array.from({ length: 20 }, (_, i) => event(topic, `rb-${i % 4}`, { i }))
          await appendAll(store, envs)
          await eventually(() => publisher.metrics().published >= 20, 'publication')
          await eventually(
            async () =>
              (await loadCheckpoint(w.ws.objectStore)).checkpoint?.last_index_key !== null,
            'checkpoint',
          )
          // The operator resets the checkpoint to the beginning, without its dedup snapshot.
          await rollBackCheckpoint(w.ws.objectStore)
          await eventually(
            () => publisher.metrics().published >= 40,
            'republication after the rollback',
          )
          await publisher.close()
          const got = await collect(w.bus, topic, (ms) => ms.length >= 40, 5_000)
          const ids = got.map((m) => m.headers.event_id)
          assert.equal(new Set(ids).size, 20)
          assert.ok(
            ids.length >= 40,
            `${ids.length} deliveries: the rolled-back range is published again`,
          )
        },
      )

      withWorld('an idle publisher costs at most one LIST per poll and no GET', async (w) => {
        const { store, counts } = counting(w.ws.objectStore)
        const publisher = createPublisher({
          objectStore: store,
          bus: w.bus,
          keyClock: databaseClock(w.ws.sql),
          ...fast,
          pollIntervalMs: 200,
          heartbeatMs: 60_000,
        })
        run(publisher)
        await eventually(() => publisher.metrics().role === 'active', 'active')
        await new Promise((r) => setTimeout(r, 300))
        const before = { ...counts }
        await new Promise((r) => setTimeout(r, 2_000))
        const puts = counts.put - before.put
        await publisher.close()
        const lists = counts.list - before.list
        const gets = counts.get - before.get
        assert.ok(lists <= 2_000 / 200 + 1, `${lists} LISTs in 10 polls`)
        assert.equal(gets, 0)
        assert.equal(puts, 0, 'no checkpoint PUT per poll while idle (the heartbeat is 60 s)')
      })

      withWorld(
        'more unsettled segments than one listing: new commits are published at once, not after the older ones settle',
        async (w) => {
          const topic = uniqueName('tail')
          const store = w.ws.store()
          // Another process's publisher: no in-process notices, long settle, small pages.
          const publisher = startPublisher(w, { batchSize: 5, settleMs: 60_000 })
          await eventually(() => publisher.metrics().role === 'active', 'active')
          const envs = Array.from({ length: 30 }, (_, i) => event(topic, `agg-${i}`, { i }))
          for (const e of envs) await store.append({ envelopes: [e] })
          // Within 20 s, although none of them settles for 60 s.
          const got = await collectDistinct(w.bus, topic, 30, 20_000)
          assert.equal(new Set(got.map((m) => m.headers.event_id)).size, 30)
          // Nothing settled yet: the checkpoint has not moved past any of them.
          const { checkpoint } = await loadCheckpoint(w.ws.objectStore)
          const first = (await w.ws.objectStore.list('indexes/by-date/', { limit: 1 })).keys[0]
          assert.ok(first !== undefined)
          assert.ok((checkpoint?.last_index_key ?? '') < first, 'the checkpoint waits for settling')
        },
      )

      withWorld(
        'commits announced by their writer are published at once, even before a listing shows them',
        async (w) => {
          const topic = uniqueName('noted')
          const store = w.ws.store()
          // A listing that lags (as on an eventually consistent store, or a segment whose PUT
          // finished after a later one's, between the tail and the settle listing).
          const lagging: ObjectStore = {
            ...w.ws.objectStore,
            list: async (prefix, options) =>
              prefix.startsWith('indexes/by-date')
                ? { keys: [] }
                : w.ws.objectStore.list(prefix, options),
          }
          const publisher = startPublisher(w, { objectStore: lagging, settleMs: 60_000 })
          await eventually(() => publisher.metrics().role === 'active', 'active')
          store.onCommit((n) => publisher.noteCommit(n))
          const envs = Array.from({ length: 8 }, (_, i) => event(topic, `agg-${i % 3}`, { i }))
          for (const e of envs) await store.append({ envelopes: [e] })
          const got = await collectDistinct(w.bus, topic, 8, 10_000)
          assert.equal(new Set(got.map((m) => m.headers.event_id)).size, 8)
          assertOrdered(got, ['agg-0', 'agg-1', 'agg-2'])
        },
      )

      withWorld(
        'a listing under way does not hold up notices: commits are published while a LIST hangs, and the listing is taken in when it returns',
        async (w) => {
          const topic = uniqueName('beside')
          const store = w.ws.store()
          let hang = false
          let release = (): void => {}
          const released = new Promise<void>((r) => (release = r))
          let hung = 0
          const slow: ObjectStore = {
            ...w.ws.objectStore,
            list: async (prefix, options) => {
              if (hang && prefix.startsWith('indexes/by-date')) {
                hung++
                await released
              }
              return w.ws.objectStore.list(prefix, options)
            },
          }
          const publisher = startPublisher(w, { objectStore: slow, listIntervalMs: 50 })
          try {
            await eventually(() => publisher.metrics().role === 'active', 'active')
            store.onCommit((n) => publisher.noteCommit(n))
            hang = true
            await eventually(() => hung >= 1, 'a listing hangs')
            const envs = Array.from({ length: 6 }, (_, i) => event(topic, `bs-${i % 2}`, { i }))
            for (const e of envs) await store.append({ envelopes: [e] })
            const got = await collectDistinct(w.bus, topic, 6, 10_000)
            assert.equal(new Set(got.map((m) => m.headers.event_id)).size, 6)
            assertOrdered(got, ['bs-0', 'bs-1'])
            assert.equal(hung, 1, 'one listing at a time')
          } finally {
            hang = false
            release()
          }
          // Once it returns, listings go on and the checkpoint moves past what was published.
          await eventually(async () => {
            const { checkpoint } = await loadCheckpoint(w.ws.objectStore)
            return (checkpoint?.recent_event_ids.length ?? 0) >= 6
          }, 'checkpoint saved after the listing returned')
          assert.equal(publisher.metrics().published, 6)
        },
      )

      withWorld(
        'commits noticed while the publisher starts are not overtaken by later ones noticed once it is active (P2)',
        async (w) => {
          const topic = uniqueName('starting')
          const store = w.ws.store()
          // The checkpoint is slow to read (the publisher is still starting when the first commits
          // are noticed), and so is its first listing (later notices come before it returns).
          let release = (): void => {}
          const released = new Promise<void>((r) => (release = r))
          const slow: ObjectStore = {
            ...w.ws.objectStore,
            get: async (key) => {
              if (key === CHECKPOINT_KEY) await released
              return w.ws.objectStore.get(key)
            },
            list: async (prefix, options) => {
              if (prefix.startsWith('indexes/by-date')) await sleep(1_500)
              return w.ws.objectStore.list(prefix, options)
            },
          }
          const publisher = startPublisher(w, { objectStore: slow })
          store.onCommit((n) => publisher.noteCommit(n))
          const aggs = ['st-0', 'st-1']
          const early = aggs.flatMap((a) => [event(topic, a, { k: 1 }), event(topic, a, { k: 2 })])
          for (const e of early) await store.append({ envelopes: [e] })
          assert.equal(publisher.metrics().role, 'starting')
          release()
          await eventually(() => publisher.metrics().role === 'active', 'active')
          const late = aggs.flatMap((a) => [event(topic, a, { k: 3 }), event(topic, a, { k: 4 })])
          for (const e of late) await store.append({ envelopes: [e] })
          const got = await collectDistinct(w.bus, topic, 8, 15_000)
          assert.equal(new Set(got.map((m) => m.headers.event_id)).size, 8)
          assertOrdered(got, aggs)
        },
      )

      withWorld(
        'after notices were lost (a listener reconnected), a noticed commit waits until listings cover what came before (P2)',
        async (w) => {
          const topic = uniqueName('gap')
          const agg = `gap-${randomUUID()}`
          // A listing shows the bucket as it was when sent, and answers 1.5 s later.
          const slow: ObjectStore = {
            ...w.ws.objectStore,
            list: async (prefix, options) => {
              const page = await w.ws.objectStore.list(prefix, options)
              if (prefix.startsWith('indexes/by-date')) await sleep(1_500)
              return page
            },
          }
          const publisher = startPublisher(w, { objectStore: slow })
          await eventually(() => publisher.metrics().role === 'active', 'active')
          await sleep(2_000)
          // A writer whose notice is lost: its commit is known to no one until a listing.
          const unheard = w.ws.store()
          await unheard.append({ envelopes: [event(topic, agg, { n: 1 })] })
          publisher.noteGap()
          // Its event is marked stored (on its own after 200 ms), so the next one is not held.
          await sleep(500)
          const heard = w.ws.store()
          heard.onCommit((n) => publisher.noteCommit(n))
          const second = await heard.append({ envelopes: [event(topic, agg, { n: 2 })] })
          assert.equal(second.envelopes[0]?.sequence_number, 2)
          const got = await collectDistinct(w.bus, topic, 2, 15_000)
          assertOrdered(got, [agg], { firstSeen: true })
          assert.equal(new Set(got.map((m) => m.headers.event_id)).size, 2)
        },
      )

      withWorld(
        'a stream of commit notices is published from the notices: one listing per list interval, not per commit, and the checkpoint still moves',
        async (w) => {
          const topic = uniqueName('notices')
          const store = w.ws.store()
          const { store: counted, counts } = counting(w.ws.objectStore)
          const publisher = startPublisher(w, {
            objectStore: counted,
            pollIntervalMs: 1_000,
            listIntervalMs: 200,
          })
          await eventually(() => publisher.metrics().role === 'active', 'active')
          store.onCommit((n) => publisher.noteCommit(n))
          const before = { ...counts }
          const started = Date.now()
          const envs = Array.from({ length: 80 }, (_, i) => event(topic, `agg-${i % 7}`, { i }))
          for (const e of envs) await store.append({ envelopes: [e] })
          const got = await collectDistinct(w.bus, topic, 80, 10_000)
          const elapsed = Date.now() - started
          const lists = counts.list - before.list
          assert.equal(new Set(got.map((m) => m.headers.event_id)).size, 80)
          // The notices carry the entries. A listing may still see a segment in the moment
          // between its PUT and its notice (the store's rename and the listing race in the
          // thread pool) and read it: a GET now and then, never one per commit.
          const gets = counts.get - before.get
          assert.ok(gets < 8, `${gets} GETs for 80 noticed commits`)
          assert.ok(
            lists <= elapsed / 200 + 3,
            `${lists} LISTs for 80 commits in ${elapsed} ms (one per 200 ms at most, plus slack)`,
          )
          assert.ok(lists < 40, `${lists} LISTs for 80 commits`)
          // Listings still run: the checkpoint reaches the last segment once it settles.
          const last = (await w.ws.objectStore.list('indexes/by-date/')).keys.at(-1) as string
          await eventually(async () => {
            const { checkpoint } = await loadCheckpoint(w.ws.objectStore)
            return (checkpoint?.last_index_key ?? '') >= last
          }, 'checkpoint past the last segment')
        },
      )

      withWorld(
        'a publisher that starts behind reads the segments no notice carried side by side (at most 16 at once), and publishes in order',
        async (w) => {
          const topic = uniqueName('catchup')
          const store = w.ws.store()
          // Committed before the publisher runs: no notice, every segment must be read.
          const envs = Array.from({ length: 60 }, (_, i) => event(topic, `agg-${i % 4}`, { i }))
          for (const e of envs) await store.append({ envelopes: [e] })
          let inFlight = 0
          let most = 0
          const slowGets: ObjectStore = {
            ...w.ws.objectStore,
            get: async (key) => {
              inFlight++
              most = Math.max(most, inFlight)
              try {
                await new Promise((r) => setTimeout(r, 20))
                return await w.ws.objectStore.get(key)
              } finally {
                inFlight--
              }
            },
          }
          startPublisher(w, { objectStore: slowGets, settleMs: 60_000 })
          const got = await collectDistinct(w.bus, topic, 60, 20_000)
          assert.ok(most > 1 && most <= 16, `${most} GETs at once`)
          assertOrdered(got, ['agg-0', 'agg-1', 'agg-2', 'agg-3'])
        },
      )

      withWorld(
        "an event in two segments listed in one cycle (a late segment and the repair's copy) is published once",
        async (w) => {
          const topic = uniqueName('copies')
          const store = w.ws.store()
          const env = event(topic, 'copied')
          // Committed before the publisher runs: no notice, both segments are listed and read.
          await store.append({ envelopes: [env] })
          const allocator = createSequenceAllocator({ sql: w.ws.sql, schema: w.ws.schema })
          const row = await allocator.lookup(env.event_id)
          assert.ok(row !== null)
          const original = await w.ws.objectStore.get(
            segmentKey(row.segment.atUs, row.segment.writer, row.segment.n),
          )
          assert.ok(original !== null)
          const copy = await allocator.reserveSegment('copy', 0)
          await w.ws.objectStore.putIfAbsent(
            segmentKey(copy.atUs, copy.writer, copy.n),
            original.body,
          )
          const publisher = startPublisher(w, { settleMs: 60_000 })
          await eventually(() => publisher.metrics().dedupSkipped >= 1, 'the copy skipped')
          const got = await collect(w.bus, topic, (ms) => ms.length >= 2, 1_500)
          assert.deepEqual(
            got.map((m) => m.headers.event_id),
            [env.event_id],
          )
        },
      )

      withWorld(
        'bad index data never blocks: malformed segments are skipped, an unreadable one is quarantined',
        async (w) => {
          const topic = uniqueName('bad')
          const store = w.ws.store()
          const enc = new TextEncoder()
          // Keys the registry knows (a writer reserved them), so the bucket guard lets appends
          // through; what lands at them is not a segment.
          const allocator = createSequenceAllocator({ sql: w.ws.sql, schema: w.ws.schema })
          const keyOf = async (n: number): Promise<string> => {
            const s = await allocator.reserveSegment('bad', n)
            return segmentKey(s.atUs, s.writer, s.n)
          }
          await w.ws.objectStore.putIfAbsent(await keyOf(0), enc.encode('{not json'))
          await w.ws.objectStore.putIfAbsent(await keyOf(1), enc.encode('{"version":9}'))
          const vanishing = await keyOf(2)
          await w.ws.objectStore.putIfAbsent(vanishing, enc.encode('{}'))
          const hiding: ObjectStore = {
            ...w.ws.objectStore,
            get: (key) => (key === vanishing ? Promise.resolve(null) : w.ws.objectStore.get(key)),
          }
          const publisher = createPublisher({
            objectStore: hiding,
            bus: w.bus,
            keyClock: databaseClock(w.ws.sql),
            ...fast,
            missingRetries: 3,
            missingGraceMs: 200,
          })
          run(publisher)
          await appendAll(store, [event(topic, 'after-bad-1'), event(topic, 'after-bad-2')])
          await eventually(() => publisher.metrics().published >= 2, 'events after the bad ones')
          const m = publisher.metrics()
          await publisher.close()
          assert.equal(m.malformed, 2)
          assert.equal(m.quarantined, 1)
          const q = await w.ws.objectStore.list(QUARANTINE_PREFIX)
          assert.equal(q.keys.length, 1)
          const record = JSON.parse(
            new TextDecoder().decode((await w.ws.objectStore.get(q.keys[0] as string))?.body),
          ) as { key: string }
          assert.equal(record.key, vanishing)
        },
      )

      withWorld(
        'a bus outage delays, never loses: failed flushes are retried and the checkpoint waits',
        async (w) => {
          const topic = uniqueName('outage')
          let down = true
          const flaky: Bus = {
            ...w.bus,
            producer: (o) => {
              const inner: BusProducer = w.bus.producer(o)
              return {
                ...inner,
                send: (msgs) =>
                  down
                    ? Promise.reject(
                        new CairnError(ErrorCode.BUS_UNAVAILABLE, 'injected outage', {
                          retryable: true,
                        }),
                      )
                    : inner.send(msgs),
              }
            },
          }
          const store = w.ws.store()
          await appendAll(
            store,
            Array.from({ length: 10 }, (_, i) => event(topic, `out-${i}`)),
          )
          const publisher = createPublisher({
            objectStore: w.ws.objectStore,
            keyClock: databaseClock(w.ws.sql),
            bus: flaky,
            ...fast,
          })
          run(publisher)
          await eventually(() => publisher.metrics().deliveryFailures > 0, 'a failed delivery')
          // It says so (readiness and metrics) while it retries.
          await eventually(() => publisher.failingWith() !== null, 'reported failing')
          assert.match(publisher.failingWith() ?? '', /injected outage/)
          assert.equal(publisher.metrics().failing, 1)
          await new Promise((r) => setTimeout(r, 600))
          assert.equal(
            (await loadCheckpoint(w.ws.objectStore)).checkpoint?.recent_event_ids.length ?? 0,
            0,
          )
          down = false
          await eventually(() => publisher.metrics().published >= 10, 'delivery after the outage')
          await eventually(() => publisher.failingWith() === null, 'no longer failing')
          assert.equal(publisher.metrics().failing, 0)
          await publisher.close()
          const got = await collect(w.bus, topic, (ms) => ms.length >= 10, 5_000)
          assert.equal(new Set(got.map((m) => m.headers.event_id)).size, 10)
        },
      )

      withWorld(
        'a standby stays passive, then takes over within seconds when the active one dies',
        async (w) => {
          const topic = uniqueName('standby')
          let alive = true
          const dying: ObjectStore = {
            ...w.ws.objectStore,
            list: (...a) => (alive ? w.ws.objectStore.list(...a) : new Promise(() => {})),
            putIfMatch: (...a) =>
              alive ? w.ws.objectStore.putIfMatch(...a) : new Promise(() => {}),
          }
          const active = createPublisher({
            objectStore: dying,
            bus: w.bus,
            keyClock: databaseClock(w.ws.sql),
            ...fast,
            publisherId: 'active',
          })
          run(active)
          await eventually(() => active.metrics().role === 'active', 'first active')
          const standby = startPublisher(w, { publisherId: 'standby' })
          await new Promise((r) => setTimeout(r, 500))
          assert.equal(standby.metrics().role, 'standby')
          const store = w.ws.store()
          await appendAll(store, [event(topic, 'sb-1')])
          await eventually(() => active.metrics().published >= 1, 'the active one publishes')
          assert.equal(standby.metrics().published, 0)
          alive = false // the active process hangs: it stops listing and saving
          const died = Date.now()
          await appendAll(store, [event(topic, 'sb-2')])
          await eventually(() => standby.metrics().role === 'active', 'takeover', 10_000)
          assert.ok(Date.now() - died < 5_000, 'takeover within seconds')
          await eventually(() => standby.metrics().published >= 1, 'the new active one publishes')
          await standby.close()
          void active.close()
          const got = await collectDistinct(w.bus, topic, 2, 5_000)
          assert.equal(new Set(got.map((m) => m.headers.event_id)).size, 2)
        },
      )

      withWorld(
        'every publisher says where it stands: the active one and the standby, then stopped',
        async (w) => {
          const presence = presenceRecorder(w.ws.sql, w.ws.schema, 'host-1')
          const active = startPublisher(w, { publisherId: 'first', presence })
          await eventually(() => active.metrics().role === 'active', 'first active')
          const standby = startPublisher(w, { publisherId: 'second', presence })
          const roles = async () =>
            Object.fromEntries(
              (await listPublishers(w.ws.sql, w.ws.schema)).map((p) => [p.id, p.role]),
            )
          await eventually(
            async () => JSON.stringify(await roles()) === '{"first":"active","second":"standby"}',
            'both heard from, the active one first',
          )
          const [first] = await listPublishers(w.ws.sql, w.ws.schema)
          assert.equal(first?.host, 'host-1')
          assert.ok((first?.seen_seconds_ago ?? 99) <= 2, 'seen within the heartbeat')
          await standby.close()
          await active.close()
          assert.deepEqual(await roles(), { first: 'stopped', second: 'stopped' })
        },
      )

      withWorld(
        'a writer that stalls past its bound is not acknowledged, and its event is still published',
        async (w) => {
          const topic = uniqueName('stall')
          let stallSegments = true
          const slow: ObjectStore = {
            ...w.ws.objectStore,
            putIfAbsent: async (key, body, ct) => {
              if (stallSegments && key.startsWith('indexes/by-date/'))
                await new Promise((r) => setTimeout(r, 300))
              return w.ws.objectStore.putIfAbsent(key, body, ct)
            },
          }
          const stalled = w.ws.store({ objectStore: slow, maxSegmentDelayMs: 100 })
          const publisher = startPublisher(w)
          const env = event(topic, 'stalled')
          await assert.rejects(
            stalled.append({ envelopes: [env] }),
            (e: unknown) => e instanceof CairnError && e.code === ErrorCode.APPEND_FAILED,
          )
          stallSegments = false
          const repaired = await w.ws.store().repairStaleReservations(0)
          assert.equal(repaired.indexed, 1)
          const got = await collect(w.bus, topic, (ms) => ms.length >= 1, 10_000)
          await publisher.close()
          assert.equal(got[0]?.headers.event_id, env.event_id)
        },
      )

      withWorld(
        'clocks that disagree within the bound lose nothing (publisher ahead, writer late)',
        async (w) => {
          const topic = uniqueName('skew')
          const slow: ObjectStore = {
            ...w.ws.objectStore,
            putIfAbsent: async (key, body, ct) => {
              if (key.startsWith('indexes/by-date/')) await new Promise((r) => setTimeout(r, 250))
              return w.ws.objectStore.putIfAbsent(key, body, ct)
            },
          }
          // Writers acknowledge segments durable within 1,000 ms (the 250 ms stall plus the PUTs on
          // a loaded machine stay well within it); clocks may differ by 200 ms: settled after 1,200.
          const store = w.ws.store({ objectStore: slow, maxSegmentDelayMs: 1_000 })
          const publisher = startPublisher(w, {
            settleMs: 1_200,
            clock: { now: () => Date.now() + 200 },
            pollIntervalMs: 20,
          })
          const envs = Array.from({ length: 8 }, (_, i) => event(topic, `skew-${i}`))
          for (const e of envs) await store.append({ envelopes: [e] })
          const got = await collectDistinct(w.bus, topic, 8, 10_000)
          await publisher.close()
          assert.equal(new Set(got.map((m) => m.headers.event_id)).size, 8)
        },
      )

      withWorld(
        "a publisher whose clock is 20 minutes ahead, then one 20 minutes behind, publishes every event and settles on the database's clock",
        async (w) => {
          const store = w.ws.store()
          const dbNowMs = async (): Promise<number> => (await databaseClock(w.ws.sql).now()) / 1000
          for (const skewMs of [20 * 60_000, -20 * 60_000]) {
            const topic = uniqueName('wrong-clock')
            const publisher = startPublisher(w, { clock: { now: () => Date.now() + skewMs } })
            const envs = Array.from({ length: 5 }, (_, i) => event(topic, `wc-${i}`))
            // Listings only, no notices: what the watermark decides (P1).
            for (const e of envs) await store.append({ envelopes: [e] })
            const appendedAt = await dbNowMs()
            const got = await collectDistinct(w.bus, topic, 5, 10_000)
            assert.deepEqual(
              new Set(got.map((m) => m.headers.event_id)),
              new Set(envs.map((e) => e.event_id)),
            )
            // It settles past them, and not beyond the database's present.
            await eventually(
              async () =>
                ((await loadCheckpoint(w.ws.objectStore)).checkpoint?.last_timestamp_ms ?? 0) >
                appendedAt,
              `the checkpoint settles past the events (clock ${skewMs} ms off)`,
            )
            const settled = (await loadCheckpoint(w.ws.objectStore)).checkpoint
            assert.ok((settled?.last_timestamp_ms ?? 0) <= (await dbNowMs()))
            assert.equal(publisher.metrics().settling, 1)
            // Its own clock's offset is measured and reported.
            assert.ok(
              Math.abs(publisher.metrics().clockOffsetMs - skewMs) < 5_000,
              `offset ${publisher.metrics().clockOffsetMs}`,
            )
            await publisher.close()
          }
        },
      )

      withWorld(
        "a publisher that cannot read the database's clock publishes noticed commits but does not settle, and says so; it settles once it can read it",
        async (w) => {
          const topic = uniqueName('no-clock')
          let readable = false
          const keyClock: KeyClock = {
            now: async () => {
              if (!readable) throw new Error('connection refused')
              return databaseClock(w.ws.sql).now()
            },
          }
          const publisher = startPublisher(w, { keyClock })
          const store = w.ws.store()
          store.onCommit((n) => publisher.noteCommit(n))
          await eventually(() => publisher.metrics().role === 'active', 'active')
          const envs = Array.from({ length: 3 }, (_, i) => event(topic, `nc-${i}`))
          for (const e of envs) await store.append({ envelopes: [e] })
          const got = await collectDistinct(w.bus, topic, 3, 10_000)
          assert.equal(new Set(got.map((m) => m.headers.event_id)).size, 3)
          const appendedAt = (await databaseClock(w.ws.sql).now()) / 1000
          // Well past the settle time: still held, and reported.
          await sleep(1_500)
          const held = (await loadCheckpoint(w.ws.objectStore)).checkpoint
          assert.ok((held?.last_timestamp_ms ?? 0) < appendedAt, 'the checkpoint did not settle')
          assert.equal(publisher.metrics().settling, 0)
          assert.equal(publisher.keyClock().trusted, false)
          assert.match(publisher.keyClock().reason ?? '', /connection refused/)
          assert.equal(held?.key_clock?.settling, false)
          readable = true
          await eventually(
            async () =>
              ((await loadCheckpoint(w.ws.objectStore)).checkpoint?.last_timestamp_ms ?? 0) >
              appendedAt,
            'the checkpoint settles once the clock is readable',
          )
          assert.equal(publisher.metrics().settling, 1)
        },
      )

      withWorld(
        'an event whose predecessor is still in flight elsewhere is held until that one is out',
        async (w) => {
          const topic = uniqueName('order')
          const agg = `order-${randomUUID()}`
          const firstEnv = event(topic, agg, { n: 1 })
          // Another writer reserved sequence 1 and is slow to write it.
          const slowKey = await reserveFirstElsewhere(w, agg, firstEnv.event_id)
          // Its segment lands where this publisher's listings no longer look (as when it lands
          // after the publisher settled past its key): only the repair's copy, with a later key
          // than the second event's, brings sequence 1 to it.
          const past: ObjectStore = {
            ...w.ws.objectStore,
            list: async (prefix, options) => {
              const page = await w.ws.objectStore.list(prefix, options)
              return { ...page, keys: page.keys.filter((k) => k !== slowKey) }
            },
          }
          const publisher = startPublisher(w, { objectStore: past, settleMs: 60_000 })
          const store = w.ws.store()
          const second = await store.append({ envelopes: [event(topic, agg, { n: 2 })] })
          assert.equal(second.envelopes[0]?.sequence_number, 2)
          await eventually(() => publisher.metrics().held > 0, 'the second event held')
          assert.equal(publisher.metrics().published, 0)
          const firstStored = { ...firstEnv, sequence_number: 1 }
          const wrote = await w.ws.objectStore.putIfAbsent(
            slowKey,
            encodeSegment(ELSEWHERE, new Date().toISOString(), [
              segmentEntry(firstStored, canonicalJson(firstStored)),
            ]),
          )
          assert.equal(wrote, 'created')
          // Once the second append's own segment is confirmed, the slow one is the only stale one.
          const allocator = createSequenceAllocator({ sql: w.ws.sql, schema: w.ws.schema })
          await eventually(
            async () => (await allocator.staleSegments(0, 10)).length === 1,
            'the second append confirmed',
          )
          const repaired = await store.repairStaleReservations(0)
          assert.equal(repaired.indexed, 1, 'the late segment is indexed again')
          const got = await collect(w.bus, topic, (ms) => ms.length >= 2, 10_000)
          await publisher.close()
          assert.deepEqual(
            got.map((m) => m.headers.sequence_number),
            ['1', '2'],
          )
        },
      )

      withWorld(
        'a checkpoint reset while an event is held keeps it known: a later event does not overtake it (P2)',
        async (w) => {
          const topic = uniqueName('held-reset')
          const agg = `hr-${randomUUID()}`
          // Another writer reserved sequence 1 and never writes it: sequence 2 is held until settled.
          await reserveFirstElsewhere(w, agg, randomUUID())
          // Listings are slow, so after the reset only what the publisher kept knows of sequence 2.
          const slow: ObjectStore = {
            ...w.ws.objectStore,
            list: async (prefix, options) => {
              if (prefix.startsWith('indexes/by-date')) await sleep(1_500)
              return w.ws.objectStore.list(prefix, options)
            },
          }
          const publisher = startPublisher(w, { objectStore: slow, settleMs: 5_000 })
          await eventually(() => publisher.metrics().role === 'active', 'active')
          const store = w.ws.store()
          store.onCommit((n) => publisher.noteCommit(n))
          await store.append({ envelopes: [event(topic, agg, { n: 2 })] })
          await eventually(() => publisher.metrics().held > 0, 'the second event held')
          // The operator rolls the checkpoint back to the beginning; the publisher adopts it.
          await rollBackCheckpoint(w.ws.objectStore)
          await eventually(
            async () => ((await loadCheckpoint(w.ws.objectStore)).checkpoint?.owner ?? '') !== '',
            'the reset adopted',
          )
          const third = await store.append({ envelopes: [event(topic, agg, { n: 3 })] })
          assert.equal(third.envelopes[0]?.sequence_number, 3)
          const got = await collect(
            w.bus,
            topic,
            (ms) => new Set(ms.map((m) => m.headers.sequence_number)).size >= 2,
            15_000,
          )
          assertOrdered(got, [agg], { firstSeen: true })
        },
      )

      withWorld(
        '8 concurrent writers with stalls between their steps and skewed clocks: every acknowledged event published, per aggregate in order',
        async (w) => {
          const topic = uniqueName('writers')
          let seed = 42
          const random = (): number => {
            seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31
            return seed / 2 ** 31
          }
          const stalling: ObjectStore = {
            ...w.ws.objectStore,
            putIfAbsent: async (key, body, ct) => {
              // A stall before each PUT: a segment, or a gap marker closing a late one's key.
              await new Promise((r) => setTimeout(r, Math.floor(random() * 60)))
              return w.ws.objectStore.putIfAbsent(key, body, ct)
            },
          }
          const writers = Array.from({ length: 8 }, (_, i) => {
            const skew = Math.round((i / 7) * 300 - 150) // −150 … +150 ms
            return w.ws.store({
              objectStore: stalling,
              maxSegmentDelayMs: 2_000,
              clock: { now: () => Date.now() + skew },
            })
          })
          const publisher = startPublisher(w, {
            settleMs: 2_300,
            clock: { now: () => Date.now() + 150 },
            pollIntervalMs: 50,
          })
          writers.forEach((s) => s.onCommit((n) => publisher.noteCommit(n)))
          const aggs = Array.from({ length: 4 }, () => `w-${randomUUID()}`)
          const acked: string[] = []
          await Promise.all(
            writers.map(async (store) => {
              for (let k = 0; k < 10; k++) {
                const env = event(topic, aggs[Math.floor(random() * aggs.length)] as string, { k })
                const res = await store.append({ envelopes: [env] })
                acked.push(res.envelopes[0]?.event_id as string)
              }
            }),
          )
          assert.equal(acked.length, 80)
          const got = await collectDistinct(w.bus, topic, 80, 20_000)
          const delivered = new Set(got.map((m) => m.headers.event_id))
          for (const id of acked)
            assert.ok(delivered.has(id), `acknowledged event ${id} was not published`)
          // Redeliveries may repeat an event: the order of first deliveries is what counts.
          assertOrdered(got, aggs, { firstSeen: true })
        },
      )
    })
  }
}
