import { randomUUID } from 'node:crypto'
import Type from 'typebox'
import { createCommandProcessor } from '../../src/application/command-processor.ts'
import type { CommandProcessor } from '../../src/application/command-processor.ts'
import { commandEnvelope } from '../../src/application/decider.ts'
import { defineAggregate, defineDomain, defineEvent } from '../../src/application/define.ts'
import { createSnapshotStore } from '../../src/application/snapshots.ts'
import type { SnapshotStore } from '../../src/application/snapshots.ts'
import { createEnvelope } from '../../src/core/envelope.ts'
import type { EventEnvelope } from '../../src/core/envelope.ts'
import { rowBetween, snapshot } from '../lib/harness.ts'
import type { ResultRow } from '../lib/harness.ts'
import type { Scenario } from '../lib/scenario.ts'
import { createLatencyRecorder, nowNs } from '../lib/stats.ts'
import { openBenchWriteSide } from '../lib/write-side.ts'
import type { BenchWriteSide } from '../lib/write-side.ts'

/** Events of the aggregate before the first measured command (--quick: fewer). */
const EVENTS = 10_000
const QUICK_EVENTS = 2_000
/** Events per append while the aggregate is seeded (one segment each; not measured). */
const SEED_GROUP = 100
/** Measured operations per variant (--quick: fewer), after `WARMUP` unmeasured ones. */
const REPEATS = 20
const QUICK_REPEATS = 5
const WARMUP = 2
const SNAPSHOT_EVERY = 1_000
/**
 * Events appended after the snapshot for the third variant: the snapshot plus the commands of the
 * loops must stay below the next multiple of `SNAPSHOT_EVERY` (or a new snapshot is taken).
 */
const BEHIND = 800

// A tiny domain: one counter aggregate, one event, one command.
const Incremented = defineEvent('Incremented', Type.Object({ by: Type.Integer({ minimum: 1 }) }))
const Counter = defineAggregate({
  type: 'BenchCounter',
  events: [Incremented],
  initialState: (): { readonly count: number } => ({ count: 0 }),
  evolve: (state, event) => ({ count: state.count + event.data.by }),
  snapshotEvery: SNAPSHOT_EVERY,
})
const Increment = Counter.command({
  type: 'INCREMENT',
  schema: Type.Object({ id: Type.String(), by: Type.Integer({ minimum: 1 }) }),
  aggregateId: (c) => c.id,
  decide: (c) => [{ type: 'Incremented', data: { by: c.by } }],
})
const domain = defineDomain({ name: 'bench_cold', aggregates: [Counter], commands: [Increment] })
const COUNTER_ID = 'counter-0'

const incremented = (): EventEnvelope =>
  createEnvelope({
    event_type: 'Incremented',
    aggregate_type: Counter.type,
    aggregate_id: COUNTER_ID,
    data: { by: 1 },
    metadata: { kind: 'domain', kafka_topic: Counter.topics.events, ordering_key: COUNTER_ID },
  })

/** Appends `count` events to the counter, `SEED_GROUP` per append; returns the new sequence. */
const seed = async (ws: BenchWriteSide, from: number, count: number): Promise<number> => {
  let seq = from
  for (let n = 0; n < count; n += SEED_GROUP) {
    const size = Math.min(SEED_GROUP, count - n)
    await ws.eventStore.append({
      envelopes: Array.from({ length: size }, incremented),
      expectedSeq: seq,
    })
    seq += size
  }
  return seq
}

/**
 * A command on a cold aggregate: every operation builds a fresh command processor (no state in
 * memory), so it loads the counter from its snapshot (if the variant has a snapshot store) and
 * the events after it, or folds the whole stream. Two measurements per variant, each its own
 * loop: `load` alone, and a full decision (`process` of a stored INCREMENT: the duplicate check,
 * the load, decide, and the append of its event). Storing the command itself is not timed.
 */
export const coldAggregate: Scenario = {
  name: 'cold-aggregate',
  kind: 'scenario',
  summary: `one INCREMENT on a cold counter of ${EVENTS} events (--quick: ${QUICK_EVENTS}) in segments of ${SEED_GROUP}, a fresh command processor each time (load + decide + append), without and with a snapshot (snapshotEvery ${SNAPSHOT_EVERY}), ${REPEATS} times (--quick: ${QUICK_REPEATS}), one client`,
  async run(ctx) {
    const events = ctx.quick ? QUICK_EVENTS : EVENTS
    const repeats = ctx.quick ? QUICK_REPEATS : REPEATS
    const rows: ResultRow[] = []
    const ws = await openBenchWriteSide(ctx, 'cold')
    try {
      const snapshots = createSnapshotStore(ws.sql, ws.schema)
      const t = Date.now()
      let count = await seed(ws, 0, events)
      ctx.log(
        `  seeded ${events} events in ${events / SEED_GROUP} appends (${((Date.now() - t) / 1000).toFixed(1)} s)`,
      )

      const fresh = (store: SnapshotStore | undefined): CommandProcessor =>
        createCommandProcessor({
          domain,
          eventStore: ws.eventStore,
          ...(store === undefined ? {} : { snapshots: store }),
          logger: ctx.logger,
        })
      const check = (state: unknown): void => {
        const got = (state as { count?: unknown }).count
        if (got !== count) throw new Error(`the counter is at ${String(got)}, expected ${count}`)
      }

      /**
       * `repeats` timed operations after `WARMUP` untimed ones, one row. `op` returns the
       * nanoseconds it timed (what it does before the timer starts is in the row's CPU and
       * request counts, not in its latency).
       */
      const measure = async (
        variant: string,
        op: () => Promise<number>,
        notes: readonly string[],
        compareTo?: string,
      ): Promise<void> => {
        for (let i = 0; i < WARMUP; i++) await op()
        const recorder = createLatencyRecorder()
        const before = await snapshot(ctx, ws.store)
        for (let i = 0; i < repeats; i++) recorder.record(await op())
        const after = await snapshot(ctx, ws.store)
        rows.push(
          rowBetween(before, after, {
            scenario: 'cold-aggregate',
            variant,
            kind: 'scenario',
            events: repeats,
            latency: recorder.summary(),
            notes,
            ...(compareTo === undefined ? {} : { compareTo: [`cold-aggregate ${compareTo}`] }),
            extra: { streamEvents: events, seedGroup: SEED_GROUP, snapshotEvery: SNAPSHOT_EVERY },
          }),
        )
      }

      /** A fresh processor's `load` (timed); checks the state it got. */
      const load = (store: SnapshotStore | undefined) => async (): Promise<number> => {
        const processor = fresh(store)
        const t0 = nowNs()
        const { state } = await processor.load(Counter, COUNTER_ID)
        const ns = nowNs() - t0
        check(state)
        return ns
      }
      const loadNote = 'an event is one load by a fresh processor'

      /** Stores an INCREMENT (untimed), then a fresh processor decides it (timed). */
      const command = (store: SnapshotStore | undefined) => async (): Promise<number> => {
        const processor = fresh(store)
        const envelope = commandEnvelope(
          Increment,
          { id: COUNTER_ID, by: 1 },
          { commandId: randomUUID(), service: 'bench' },
        )
        const stored = (await ws.eventStore.append({ envelopes: [envelope] })).envelopes[0]
        if (stored === undefined) throw new Error('the command was not stored')
        const t0 = nowNs()
        const result = await processor.process(stored)
        const ns = nowNs() - t0
        if (result.outcome !== 'completed' || result.events.length !== 1)
          throw new Error(`INCREMENT came to ${JSON.stringify(result)}`)
        count++
        return ns
      }
      const commandNote =
        'an event is one command decided by a fresh processor; the latency is `process` (duplicate check, load, decide, append of its event); CPU and requests also count storing the command (1 PUT)'
      /** Envelopes (a command and its event each) one command loop adds to the stream. */
      const perLoop = 2 * (WARMUP + repeats)

      const streamNote = `a stream of ${events} events in ${events / SEED_GROUP} segments of ${SEED_GROUP} (plus the commands and events of earlier measurements, one segment each)`

      // (a) No snapshot store: every load folds the whole stream.
      const none = [`${streamNote}; no snapshot store: every load folds the whole stream`]
      await measure('no snapshot: load', load(undefined), [...none, loadNote])
      await measure('no snapshot', command(undefined), [...none, commandNote])

      // (b) A snapshot at the current sequence (taken by one load), and commands after it.
      await load(snapshots)()
      const taken = await snapshots.load(Counter.type, COUNTER_ID, Counter.version)
      if (taken === null) throw new Error('no snapshot was taken')
      ctx.log(`  snapshot taken at sequence ${taken.seq}`)
      const near = [`${streamNote}; a snapshot at sequence ${taken.seq}`]
      await measure(
        'snapshot: load',
        load(snapshots),
        [...near, 'nothing after the snapshot', loadNote],
        'no snapshot: load',
      )
      await measure(
        'snapshot',
        command(snapshots),
        [...near, `up to ${perLoop} envelopes after the snapshot`, commandNote],
        'no snapshot',
      )

      // (c) The same with BEHIND more events after the snapshot, the next multiple of
      // snapshotEvery not reached (so the snapshot stays where it is).
      const head = await ws.eventStore.currentSequence(Counter.type, COUNTER_ID)
      await seed(ws, head, BEHIND)
      count += BEHIND
      const boundary = (Math.floor(taken.seq / SNAPSHOT_EVERY) + 1) * SNAPSHOT_EVERY
      if (head + BEHIND + perLoop >= boundary)
        throw new Error(`snapshot +${BEHIND} would cross sequence ${boundary}: lower BEHIND`)
      await measure(
        `snapshot +${BEHIND}`,
        command(snapshots),
        [
          ...near,
          `${head - taken.seq + BEHIND} to ${head - taken.seq + BEHIND + perLoop} envelopes after the snapshot (${BEHIND} events in ${BEHIND / SEED_GROUP} segments among them)`,
          commandNote,
        ],
        'no snapshot',
      )
    } finally {
      await ws.close()
    }
    return rows
  },
}
