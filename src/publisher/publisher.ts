import { randomBytes } from 'node:crypto'
import { CairnError, ErrorCode, isCairnError } from '../core/errors.ts'
import type { BusMessage, BusProducer, Bus } from '../core/ports/bus.ts'
import { systemClock } from '../core/ports/clock.ts'
import type { Clock, KeyClock } from '../core/ports/clock.ts'
import { silentLogger } from '../core/ports/logger.ts'
import type { Logger } from '../core/ports/logger.ts'
import { listAll } from '../core/ports/object-store.ts'
import type { ListPage, ObjectStore } from '../core/ports/object-store.ts'
import { noopTracer } from '../core/ports/tracer.ts'
import type { Span, Tracer } from '../core/ports/tracer.ts'
import type { CommitNotice } from '../event-store/event-store.ts'
import {
  BY_DATE_PREFIX,
  QUARANTINE_PREFIX,
  segmentKeyFloor,
  parseSegmentKey,
} from '../event-store/keys.ts'
import { parseSegment, segmentEntries } from '../event-store/segment.ts'
import type { SegmentEntry } from '../event-store/segment.ts'
import { loadCheckpoint, saveCheckpoint } from './checkpoint.ts'
import type { Checkpoint } from './checkpoint.ts'
import { createDedupWindow } from './dedup.ts'
import type { DedupWindow } from './dedup.ts'
import { createKeyTime } from './key-time.ts'
import type { KeyTimeStatus } from './key-time.ts'

/** Commit notices whose entries are kept at most. */
const NOTED_MAX = 10_000

const maxKey = (a: string | null, b: string | null): string | null =>
  a === null ? b : b === null ? a : a > b ? a : b

export type PublisherOptions = {
  readonly objectStore: ObjectStore
  readonly bus: Bus
  readonly logger?: Logger
  /**
   * The clock that stamps segment keys (the sequence allocator's database). The publisher
   * settles on it, never on its own wall clock (docs/publisher.md).
   */
  readonly keyClock: KeyClock
  /**
   * The largest uncertainty tolerated of a reading of `keyClock` (its round trip), and the margin
   * in `settleMs` beside the writers' bound: `EVENT_STORE_MAX_CLOCK_SKEW_SECONDS`. Default 5 s.
   */
  readonly maxClockUncertaintyMs?: number
  /** Stamps informational times only (the checkpoint's `updated_at`, quarantine records). */
  readonly clock?: Clock
  /** Topic of an event without `metadata.kafka_topic`, by aggregate type. */
  readonly routes?: Readonly<Record<string, string>>
  /** Topic when neither the envelope nor the routes name one (default `cairn-events`). */
  readonly defaultTopic?: string
  /** Partitions of the topics the publisher creates (default 3). */
  readonly partitions?: number
  /** Prepended to every topic name (`CAIRN_KAFKA_TOPIC_PREFIX`: several deployments on one cluster). */
  readonly topicPrefix?: string
  /** Segments read per cycle (`EVENT_PUBLISHER_BATCH_SIZE`, default 200). */
  readonly batchSize?: number
  /** Messages per producer flush (`EVENT_PUBLISHER_KAFKA_FLUSH_BATCH_SIZE`, default batchSize). */
  readonly flushBatchSize?: number
  /** Longest wait for a flush (`EVENT_PUBLISHER_KAFKA_FLUSH_TIMEOUT_SECONDS`, default 10 s). */
  readonly flushTimeoutMs?: number
  /** Polling period when not woken (default 3 s). */
  readonly pollIntervalMs?: number
  /**
   * While commit notices keep arriving, the by-date prefix is listed at most this often (default
   * 250 ms): a noticed commit is published at once from its notice, and the listings (which
   * find what no notice announced and move the checkpoint) do not run once per commit.
   */
  readonly listIntervalMs?: number
  /**
   * How long after its key's time (database clock) a segment may still appear: the writers'
   * bound (`EVENT_STORE_MAX_INDEX_DELAY_SECONDS`) plus a margin
   * (`EVENT_STORE_MAX_CLOCK_SKEW_SECONDS`). Default 15 s. See docs/publisher.md.
   */
  readonly settleMs?: number
  readonly dedupMaxEvents?: number
  readonly dedupCheckpointMaxEvents?: number
  /**
   * The noticed commits' entries kept until their segments are listed, at most this size of
   * bodies in UTF-16 units (default 64 Mi); beyond it the oldest are forgotten and read when listed.
   */
  readonly notedMaxChars?: number
  readonly metricsLogIntervalMs?: number
  /** How often the active publisher writes its checkpoint at least (default 5 s). */
  readonly heartbeatMs?: number
  /** A standby takes over when the checkpoint has not changed for this long (default 15 s). */
  readonly takeoverAfterMs?: number
  /** Attempts to read a listed segment before it is quarantined (default 5)… */
  readonly missingRetries?: number
  /** …spread over at least this long (default 10 s). */
  readonly missingGraceMs?: number
  /** An id for logs and the checkpoint's owner field (default random). */
  readonly publisherId?: string
  /**
   * Told where this publisher stands about every heartbeat and when its role changes, so that
   * operators see the standbys too (the checkpoint names the active one only). Best effort: a
   * failure is logged at debug level and never holds publishing.
   */
  readonly presence?: (state: PublisherPresence) => Promise<void>
  /**
   * A producer span per published event, child of the envelope's traceparent; the Kafka header
   * `traceparent` names the span, so consumers continue the same trace (default: no tracing).
   */
  readonly tracer?: Tracer
}

/** What a publisher says of itself (see `presence`). */
export type PublisherPresence = {
  readonly id: string
  readonly role: 'starting' | 'active' | 'standby' | 'stopped'
  /** The last segment key it published from the checkpoint (null before the first). */
  readonly position: string | null
}

export type PublisherMetrics = {
  published: number
  dedupSkipped: number
  checkpointSaves: number
  flushes: number
  flushMsTotal: number
  deliveryFailures: number
  malformed: number
  quarantined: number
  held: number
  /** Segments read from the store (GETs): those no commit notice carried the entries of. */
  segmentReads: number
  /** Age in ms of the oldest segment not yet fully published (0 when caught up). */
  lagMs: number
  /**
   * 1 while the publisher can read the clock that stamps keys and so settle (move its checkpoint);
   * 0 while it cannot: it goes on publishing noticed commits and holds the checkpoint.
   */
  settling: number
  /** This host's clock minus the database's, ms, as last measured (reported, decides nothing). */
  clockOffsetMs: number
  /** 1 while its cycles fail (a dependency is away) and it retries, else 0. */
  failing: number
  role: 'starting' | 'active' | 'standby' | 'stopped'
}

export type Publisher = {
  /** Runs until the signal aborts (or `close`); resolves after a clean stop. */
  run(signal?: AbortSignal): Promise<void>
  /** Wakes the loop now (the writer in this process committed). */
  wake(): void
  /** In-process fast path: remember a commit's segment so it needs no GET. */
  noteCommit(notice: CommitNotice): void
  /** A commit announced by a writer in another process (its segment key): wakes and knows it. */
  noteSegmentKey(key: string): void
  /**
   * Notices may have been missed (the listener of another process's notices reconnected): until
   * listings have covered what came before, noticed commits wait for them (P2).
   */
  noteGap(): void
  metrics(): Readonly<PublisherMetrics>
  /** Whether it can settle, and why not (readiness, `cairn status`). */
  keyClock(): KeyTimeStatus
  /** The error its cycles fail with while it retries (a dependency is away), else null. */
  failingWith(): string | null
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

type OpenSegment = {
  readonly key: string
  readonly us: number
  entries: readonly SegmentEntry[] | null
  readonly done: Set<string>
  missing: number
  firstMissingAt: number
}

/** Failed cycles in a row after which the publisher replaces its producer. */
const RENEW_PRODUCER_AFTER = 10

const sleepUntil = (
  ms: number,
  signal: AbortSignal,
  wakeup: { fn: (() => void) | null },
): Promise<void> =>
  new Promise<void>((resolve) => {
    if (signal.aborted) return resolve()
    const timer = setTimeout(finish, ms)
    function finish(): void {
      clearTimeout(timer)
      signal.removeEventListener('abort', finish)
      wakeup.fn = null
      resolve()
    }
    signal.addEventListener('abort', finish)
    wakeup.fn = finish
  })

/**
 * The EventPublisher (`message_relay`): tails `indexes/by-date/` and publishes every stored
 * envelope, unchanged, to its Kafka topic, at least once (P1), in per-aggregate order (P2), with
 * best-effort dedup (P3), at O(1) requests per idle poll (P4). The argument for P1 is in
 * docs/publisher.md; in short: a segment whose time is older than `settleMs` can no longer
 * appear, so the checkpoint moves only over settled keys whose events were all confirmed delivered.
 */
export const createPublisher = (options: PublisherOptions): Publisher => {
  const store = options.objectStore
  const clock = options.clock ?? systemClock
  /** Durations (polls, heartbeats, takeover, grace periods) are measured on the monotonic clock. */
  const mono = (): number => performance.now()
  const id = options.publisherId ?? `publisher-${randomBytes(4).toString('hex')}`
  const log = (options.logger ?? silentLogger).child({ component: 'publisher', publisher: id })
  const tracer = options.tracer ?? noopTracer
  const messagingSystem = options.bus.describe.startsWith('kafka') ? 'kafka' : 'in_process'
  const routes = options.routes ?? {}
  const defaultTopic = options.defaultTopic ?? 'cairn-events'
  const partitions = options.partitions ?? 3
  const batchSize = options.batchSize ?? 200
  const flushBatchSize = options.flushBatchSize ?? batchSize
  const flushTimeoutMs = options.flushTimeoutMs ?? 10_000
  const pollIntervalMs = options.pollIntervalMs ?? 3_000
  const listIntervalMs = Math.min(options.listIntervalMs ?? 250, pollIntervalMs)
  const settleMs = options.settleMs ?? 15_000
  const dedupMax = options.dedupMaxEvents ?? 10_000
  const dedupSnapshotMax = options.dedupCheckpointMaxEvents ?? 2_000
  const notedMaxChars = options.notedMaxChars ?? 64 * 1024 * 1024
  const metricsLogIntervalMs = options.metricsLogIntervalMs ?? 30_000
  const heartbeatMs = options.heartbeatMs ?? 5_000
  const takeoverAfterMs = options.takeoverAfterMs ?? 15_000
  const missingRetries = options.missingRetries ?? 5
  const missingGraceMs = options.missingGraceMs ?? 10_000
  const maxClockUncertaintyMs = options.maxClockUncertaintyMs ?? 5_000
  const keyTime = createKeyTime({
    source: options.keyClock,
    maxUncertaintyMs: maxClockUncertaintyMs,
    // A reading is refreshed every cycle and at least every second; one this old means the
    // database's clock cannot be read.
    maxAgeMs: Math.max(10_000, 3 * pollIntervalMs),
    wall: () => clock.now(),
  })
  /** How often the key clock is read while the loop runs. */
  const keyClockRefreshMs = 1_000
  /** Segments read at once when no notice carried them (a catch-up). */
  const readConcurrency = 16

  const m: PublisherMetrics = {
    published: 0,
    dedupSkipped: 0,
    checkpointSaves: 0,
    segmentReads: 0,
    flushes: 0,
    flushMsTotal: 0,
    deliveryFailures: 0,
    malformed: 0,
    quarantined: 0,
    held: 0,
    lagMs: 0,
    settling: 0,
    clockOffsetMs: 0,
    failing: 0,
    role: 'starting',
  }

  const stop = new AbortController()
  const wakeup: { fn: (() => void) | null } = { fn: null }
  /** The next cycle lists (an explicit wake, the poll timer, more pages, a new leader). */
  let wantList = false
  /** A commit notice arrived: the next cycle publishes what is known, listing only if due. */
  let noticed = false
  let lastListAt = Number.NEGATIVE_INFINITY
  const wake = (): void => {
    wantList = true
    wakeup.fn?.()
  }

  // Checkpoint state (only meaningful while active).
  let position: string | null = null
  let etag: string | null = null
  let lastSavedPosition: string | null = null
  let lastSaveAt = 0
  let publishedAtSave = 0
  let dedup: DedupWindow = createDedupWindow(dedupMax)
  /** Segments after `position` seen in listings and not yet settled-and-done, by key. */
  const open = new Map<string, OpenSegment>()
  /**
   * The keys of `open` with events not yet published (or not yet read): what a cycle works on,
   * so that its cost follows the new commits, not every segment waiting to settle.
   */
  const unfinished = new Set<string>()
  /** Segments of noticed commits (in-process, or with their entries), so they need no GET. */
  const noted = new Map<string, readonly SegmentEntry[]>()
  let notedChars = 0
  const sizeOf = (entries: readonly SegmentEntry[]): number => {
    let n = 0
    for (const e of entries) n += e.body.length
    return n
  }
  const forget = (key: string): readonly SegmentEntry[] | undefined => {
    const entries = noted.get(key)
    if (entries !== undefined) {
      noted.delete(key)
      notedChars -= sizeOf(entries)
    }
    return entries
  }
  /**
   * Set when notices may have been missed: becoming active, a checkpoint reset, a listener that
   * reconnected (`since`, publisher clock). A noticed commit could then be newer than a commit of
   * the same aggregate that nothing made known yet, and publishing it at once would put it first.
   * Until then only segments up to `through` are published: the end of the range listings sent
   * after `since` have covered without a hole, from the position on. A listing sent after `since`
   * that reaches the end clears it: from then on every commit was either listed or noticed.
   */
  let coverage: { readonly since: number; readonly through: string | null } | null = null
  const distrust = (): void => {
    coverage = { since: mono(), through: position }
  }
  /** Per aggregate (`type\0id`): the highest sequence published recently (for P2 holds). */
  const lastSeq = new Map<string, { seq: number; us: number }>()
  const knownTopics = new Set<string>()
  let producer: BusProducer | null = null

  const aggKey = (e: SegmentEntry): string => `${e.aggregate_type}\u0000${e.aggregate_id}`
  const topicPrefix = options.topicPrefix ?? ''
  const topicOf = (e: SegmentEntry): string =>
    topicPrefix + (e.kafka_topic ?? routes[e.aggregate_type] ?? defaultTopic)

  const checkpointBody = (owner: string): Checkpoint => ({
    last_index_key: position,
    last_timestamp_ms: position === null ? 0 : Math.floor(usOfPosition(position) / 1000),
    updated_at: new Date(clock.now()).toISOString(),
    recent_event_ids: dedup.snapshot(dedupSnapshotMax),
    owner,
    key_clock: {
      settling: m.settling === 1,
      reason: keyTime.status().reason,
      offset_ms: keyTime.status().offsetMs,
    },
  })

  const usOfPosition = (key: string): number => {
    const parsed = parseSegmentKey(key)
    if (parsed !== null) return parsed.us
    const m = /(\d{16})$/.exec(key)
    return m === null ? 0 : Number(m[1])
  }

  /**
   * Saves the checkpoint; false when another writer replaced it (we are no longer the owner).
   * `release` leaves it unowned, so that the next publisher takes over without waiting.
   */
  const save = async (release = false): Promise<boolean> => {
    const next = await saveCheckpoint(store, checkpointBody(release ? '' : id), etag)
    if (next === null) return false
    etag = next
    lastSavedPosition = position
    publishedAtSave = m.published
    lastSaveAt = mono()
    m.checkpointSaves++
    return true
  }

  /** Adopts the checkpoint as found (start, takeover, or an operator's reset). */
  const adopt = (cp: Checkpoint | null, tag: string | null): void => {
    position = cp?.last_index_key ?? null
    etag = tag
    lastSavedPosition = position
    dedup = createDedupWindow(dedupMax, cp?.recent_event_ids ?? [])
    open.clear()
    unfinished.clear()
    lastSeq.clear()
    // What it knew is forgotten until listed again: noticed commits wait for that (P2).
    distrust()
  }

  /**
   * Becomes the active publisher if the checkpoint is ours, unowned, or unchanged for
   * `takeoverAfterMs` (its owner is gone). Returns true when active.
   */
  let observedTag: string | null | undefined
  let observedSince = 0
  const tryToLead = async (): Promise<boolean> => {
    const { checkpoint, etag: tag } = await loadCheckpoint(store)
    const now = mono()
    if (tag !== observedTag) {
      observedTag = tag
      observedSince = now
    }
    const ownerGone = now - observedSince >= takeoverAfterMs
    if (checkpoint === null || checkpoint.owner === '' || checkpoint.owner === id || ownerGone) {
      adopt(checkpoint, tag)
      if (await save()) {
        if (checkpoint !== null && checkpoint.owner !== id && checkpoint.owner !== '') {
          log.warn({ previous_owner: checkpoint.owner }, 'took over as the active publisher')
        } else {
          log.info({ position }, 'active publisher')
        }
        return true
      }
    }
    return false
  }

  // -------------------------------------------------------------------------------------------

  const ensureTopics = async (topics: Iterable<string>): Promise<void> => {
    const missing = [...new Set(topics)].filter((t) => !knownTopics.has(t))
    if (missing.length === 0) return
    await options.bus.ensureTopics(missing.map((name) => ({ name, partitions })))
    for (const t of missing) knownTopics.add(t)
  }

  const flush = async (
    batch: readonly { entry: SegmentEntry; segment: OpenSegment }[],
  ): Promise<void> => {
    if (batch.length === 0) return
    await ensureTopics(batch.map((b) => topicOf(b.entry)))
    const spans: Span[] = []
    const messages: BusMessage[] = batch.map(({ entry }) => {
      const topic = topicOf(entry)
      const key = entry.ordering_key ?? entry.aggregate_id
      let traceparent = entry.traceparent
      if (tracer.enabled) {
        const span = tracer.startSpan(`send ${topic}`, {
          kind: 'producer',
          parent: entry.traceparent,
          attributes: {
            'messaging.system': messagingSystem,
            'messaging.operation.type': 'send',
            'messaging.operation.name': 'send',
            'messaging.destination.name': topic,
            'messaging.message.id': entry.event_id,
            'messaging.kafka.message.key': key,
            'messaging.batch.message_count': batch.length,
            'cairn.event.type': entry.event_type,
            'cairn.aggregate.type': entry.aggregate_type,
            'cairn.sequence_number': entry.sequence_number,
          },
        })
        spans.push(span)
        traceparent = span.traceparent
      }
      return {
        topic,
        key,
        value: Buffer.from(entry.body, 'utf8'),
        headers: {
          event_id: entry.event_id,
          event_type: entry.event_type,
          aggregate_type: entry.aggregate_type,
          aggregate_id: entry.aggregate_id,
          sequence_number: String(entry.sequence_number),
          ...(traceparent === undefined ? {} : { traceparent }),
          ...(entry.tracestate === undefined ? {} : { tracestate: entry.tracestate }),
        },
      }
    })
    producer ??= options.bus.producer({ clientId: id })
    const started = mono()
    let timer: ReturnType<typeof setTimeout> | undefined
    try {
      await Promise.race([
        producer.send(messages),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                new CairnError(
                  ErrorCode.BUS_UNAVAILABLE,
                  `flush took longer than ${flushTimeoutMs} ms`,
                  { retryable: true },
                ),
              ),
            flushTimeoutMs,
          )
        }),
      ])
    } catch (error) {
      m.deliveryFailures += batch.length
      for (const span of spans) span.fail(error)
      throw error
    } finally {
      clearTimeout(timer)
      for (const span of spans) span.end()
    }
    m.flushes++
    m.flushMsTotal += mono() - started
    for (const { entry, segment } of batch) {
      dedup.add(entry.event_id)
      segment.done.add(entry.event_id)
      const k = aggKey(entry)
      const prev = lastSeq.get(k)
      if (prev === undefined || prev.seq < entry.sequence_number)
        lastSeq.set(k, { seq: entry.sequence_number, us: segment.us })
      m.published++
    }
  }

  const quarantine = async (key: string, reason: string): Promise<void> => {
    const body = new TextEncoder().encode(
      JSON.stringify({
        key,
        reason,
        quarantined_at: new Date(clock.now()).toISOString(),
        publisher: id,
      }),
    )
    await store.putIfAbsent(`${QUARANTINE_PREFIX}${key.slice(BY_DATE_PREFIX.length)}`, body)
    m.quarantined++
    log.error(
      { key, reason },
      'segment quarantined: the publisher moves on; list with `cairn quarantine`',
    )
  }

  /** Reads a listed segment; null while it cannot be read yet. Malformed → empty (skipped). */
  const entriesOf = async (om: OpenSegment): Promise<readonly SegmentEntry[] | null> => {
    if (om.entries !== null) return om.entries
    const cached = forget(om.key)
    if (cached !== undefined) {
      om.entries = cached
      return cached
    }
    m.segmentReads++
    const got = await store.get(om.key)
    if (got === null) {
      om.missing++
      if (om.missing === 1) om.firstMissingAt = mono()
      if (om.missing >= missingRetries && mono() - om.firstMissingAt >= missingGraceMs) {
        await quarantine(om.key, `listed but unreadable after ${om.missing} attempts`)
        om.entries = []
        return om.entries
      }
      log.warn({ key: om.key, attempt: om.missing }, 'listed segment not readable yet; will retry')
      return null
    }
    try {
      om.entries = segmentEntries(parseSegment(got.body))
    } catch (error) {
      m.malformed++
      log.error({ key: om.key, err: String(error) }, 'malformed segment skipped')
      om.entries = []
    }
    return om.entries
  }

  /**
   * A commit announced by its writer: known at once, so a segment whose PUT finished after a
   * later one's is not left between the tail listing and the settle listing (it would wait for
   * the checkpoint to reach it). Discovery only: listings stay the proof that nothing is missed.
   */
  const noteKey = (key: string): void => {
    // A standby leaves notices to the active publisher; on becoming active it lists first.
    if (m.role !== 'active') return
    if (position === null || key > position) register(key)
    noticed = true
    wakeup.fn?.()
  }

  /** Makes a segment key known to the cycles (from a listing or a commit notice). */
  const register = (key: string): void => {
    if (open.has(key)) return
    const parts = parseSegmentKey(key)
    if (parts === null) {
      m.malformed++
      log.error({ key }, 'malformed index key skipped')
      open.set(key, { key, us: 0, entries: [], done: new Set(), missing: 0, firstMissingAt: 0 })
      return
    }
    unfinished.add(key)
    open.set(key, {
      key,
      us: parts.us,
      entries: null,
      done: new Set(),
      missing: 0,
      firstMissingAt: 0,
    })
  }
  /**
   * A listing's result: the settle listing from `from` (the position when it was sent), the tail
   * listing when the settle listing left pages, and the watermark taken before it was sent.
   */
  type Listed = {
    readonly from: string | null
    /** −Infinity when the key clock could not be read: nothing is settled. */
    readonly watermarkUs: number
    readonly page: ListPage
    readonly tail: ListPage | undefined
    /** The key the tail listing started after. */
    readonly tailFrom: string | undefined
    /** When the listing was sent (monotonic). */
    readonly sentAt: number
  }
  /**
   * The settled watermark (µs, database clock): the key clock's certain lower bound less
   * `settleMs`. −Infinity, settling nothing, while the key clock cannot be read (docs/publisher.md).
   */
  const watermark = (): number => {
    const lower = keyTime.lowerBoundUs()
    return lower === null ? Number.NEGATIVE_INFINITY : lower - settleMs * 1000
  }

  let offsetReported = false
  let lastKeyRead = Number.NEGATIVE_INFINITY
  /** Reads the key clock when due (without waiting) and reports a change of trust, loudly. */
  const watchKeyClock = (): void => {
    if (keyTime.ageMs() >= keyClockRefreshMs && mono() - lastKeyRead >= keyClockRefreshMs / 4) {
      lastKeyRead = mono()
      void keyTime.measure()
    }
    const status = keyTime.status()
    const settling = status.trusted ? 1 : 0
    if (settling !== m.settling) {
      if (settling === 1) log.info({ offset_ms: status.offsetMs }, 'database clock read; settling')
      else
        log.error(
          { reason: status.reason },
          'cannot read the database clock: not settling (the checkpoint holds; noticed commits are still published)',
        )
      m.settling = settling
    }
    m.clockOffsetMs = status.offsetMs ?? 0
    // This host's clock decides nothing here, but an offset beyond the margin means broken time
    // sync, which the operator should know of (leases and status times read oddly, logs mislead).
    const far = status.offsetMs !== null && Math.abs(status.offsetMs) > maxClockUncertaintyMs
    if (far && !offsetReported)
      log.warn(
        { offset_ms: status.offsetMs },
        "this host's clock is far from the database's; the publisher settles on the database's clock",
      )
    offsetReported = far
  }

  /** The listing under way: it is sent without holding up cycles that publish from notices. */
  let listingInFlight = false
  /** A listing that came back and waits for the next cycle. */
  let listed: { readonly ok: Listed } | { readonly error: unknown } | undefined

  const startListing = (): void => {
    listingInFlight = true
    lastListAt = mono()
    const from = position
    // The watermark is taken before listing: a key older than it that this listing misses
    // cannot belong to an acknowledged append (docs/publisher.md).
    const watermarkUs = watermark()
    const sentAt = mono()
    const list = async (): Promise<Listed> => {
      // The settle listing, from the checkpoint: it finds late arrivals and decides how far the
      // checkpoint may move.
      const page = await store.list(BY_DATE_PREFIX, {
        ...(from === null ? {} : { startAfter: from }),
        limit: batchSize,
      })
      // More unsettled segments than one page: the tail listing continues after the newest key
      // known, so new commits are published at once instead of after the older ones settle.
      // While notices may have been missed, it continues after what listings covered instead.
      let tail: ListPage | undefined
      let tailFrom: string | undefined
      if (page.next !== undefined) {
        let newest = page.keys.at(-1) as string
        if (coverage === null) {
          for (const key of open.keys()) if (key > newest) newest = key
        } else if (coverage.through !== null && coverage.through > newest) {
          newest = coverage.through
        }
        tailFrom = newest
        tail = await store.list(BY_DATE_PREFIX, { startAfter: newest, limit: batchSize })
      }
      return { from, watermarkUs, page, tail, tailFrom, sentAt }
    }
    void list()
      .then(
        (ok) => {
          listed = { ok }
        },
        (error: unknown) => {
          listed = { error }
        },
      )
      .finally(() => {
        listingInFlight = false
        wakeup.fn?.()
      })
  }

  /**
   * One pass: take in a listing that came back (`listing`), publish what is ready, advance over
   * what is settled. Without a listing it publishes what commit notices made known and leaves
   * the checkpoint where it is: only a listing proves that nothing before a key was missed.
   * Says whether to list again at once (pages left unread, or a listing dropped).
   */
  const cycle = async (listing: Listed | undefined): Promise<{ readonly more: boolean }> => {
    // A listing sent before the position was adopted anew (a reset, a takeover) is dropped.
    const valid = listing !== undefined && listing.from === position ? listing : undefined
    const watermarkUs = valid?.watermarkUs ?? watermark()
    const page = valid?.page
    const tail = valid?.tail
    for (const key of page?.keys ?? []) register(key)
    for (const key of tail?.keys ?? []) register(key)
    const settleEnd = page?.next === undefined ? undefined : page.keys.at(-1)
    if (valid !== undefined) cover(valid)
    const through = coverage === null ? undefined : maxKey(coverage.through, position)

    const work = [...unfinished]
      .filter((key) => position === null || key > position)
      .filter((key) => through === undefined || (through !== null && key <= through))
      .sort()
      .map((key) => open.get(key) as OpenSegment)
    // Segments no notice carried (a catch-up after a restart or a takeover, another process's
    // large groups) are read side by side; the loop below still publishes in key order.
    const unread = work.filter((om) => om.entries === null && !noted.has(om.key))
    if (unread.length > 1) {
      let next = 0
      const reader = async (): Promise<void> => {
        for (let om = unread[next++]; om !== undefined; om = unread[next++]) await entriesOf(om)
      }
      await Promise.all(Array.from({ length: Math.min(readConcurrency, unread.length) }, reader))
    }
    let batch: { entry: SegmentEntry; segment: OpenSegment }[] = []
    /**
     * Event ids in the batch being built, with the other segments listing the same event (a late
     * segment and the repair's copy of it, listed in one cycle): sent once, done in each once the
     * batch is delivered.
     */
    let batched = new Map<string, OpenSegment[]>()
    const flushBatch = async (): Promise<void> => {
      await flush(batch)
      for (const [id, copies] of batched) for (const om of copies) om.done.add(id)
      batch = []
      batched = new Map()
    }
    // Tentative per-aggregate sequence including the batch being built (committed on flush).
    const pendingSeq = new Map<string, number>()
    /** Per aggregate, the lowest sequence held back this cycle: later ones wait behind it. */
    const blocked = new Map<string, number>()
    for (const om of work) {
      const entries = await entriesOf(om)
      if (entries === null) {
        // Not readable yet: keep order, do not publish past it in this cycle.
        break
      }
      for (const entry of entries) {
        if (om.done.has(entry.event_id)) continue
        const k = aggKey(entry)
        if (dedup.has(entry.event_id)) {
          m.dedupSkipped++
          om.done.add(entry.event_id)
          const prev = lastSeq.get(k)
          if (prev === undefined || prev.seq < entry.sequence_number)
            lastSeq.set(k, { seq: entry.sequence_number, us: om.us })
          continue
        }
        const copies = batched.get(entry.event_id)
        if (copies !== undefined) {
          m.dedupSkipped++
          copies.push(om)
          continue
        }
        const heldFrom = blocked.get(k)
        if (heldFrom !== undefined && entry.sequence_number > heldFrom) continue
        const known = pendingSeq.get(k) ?? lastSeq.get(k)?.seq
        if (
          entry.prev_pending === true &&
          (known ?? 0) < entry.sequence_number - 1 &&
          om.us >= watermarkUs
        ) {
          // Its predecessor is in flight elsewhere: publish it after that one (P2), or once settled.
          blocked.set(k, Math.min(heldFrom ?? Number.MAX_SAFE_INTEGER, entry.sequence_number))
          m.held++
          continue
        }
        pendingSeq.set(k, entry.sequence_number)
        batch.push({ entry, segment: om })
        batched.set(entry.event_id, [])
        if (batch.length >= flushBatchSize) await flushBatch()
      }
    }
    await flushBatch()
    for (const om of work) if (isComplete(om)) unfinished.delete(om.key)
    // Age in ms of the oldest segment not yet fully published (0 when caught up).
    const oldest = work.find((om) => unfinished.has(om.key))
    const keyNowUs = keyTime.lowerBoundUs()
    m.lagMs =
      oldest === undefined || keyNowUs === null
        ? 0
        : Math.max(0, Math.floor((keyNowUs - oldest.us) / 1000))
    if (page === undefined) return { more: listing !== undefined && valid === undefined }
    // Notices may have been missed and listings have not caught up yet: list again at once.
    const uncovered = coverage !== null

    // Advance over the settled prefix of what is done.
    const listed = [...open.values()]
      .filter((om) => position === null || om.key > position)
      .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    let next = position
    /** The first listed segment the position must not pass (unpublished, unsettled, unseen). */
    let barrier: OpenSegment | undefined
    for (const om of listed) {
      const complete = !unfinished.has(om.key)
      // Beyond the settle listing's end a late key could hide between the two listings.
      if (!complete || om.us >= watermarkUs || (settleEnd !== undefined && om.key > settleEnd)) {
        barrier = om
        break
      }
      next = om.key
    }
    if (
      watermarkUs > Number.NEGATIVE_INFINITY &&
      (barrier !== undefined || page.next === undefined)
    ) {
      // Every key before the watermark was listed and is done: the position may move up to the
      // watermark, or to just before the first segment it must not pass. No segment can still
      // appear below that floor (docs/publisher.md), so a quiet start followed by steady traffic
      // (always something newer than the watermark) does not leave the checkpoint unset.
      const upToUs = Math.min(watermarkUs, barrier?.us ?? watermarkUs)
      const floor = segmentKeyFloor(Math.max(0, Math.floor(upToUs)))
      const safe = settleEnd === undefined || floor <= settleEnd
      if (safe && (next === null || floor > next)) next = floor
    }
    if (next !== null && (position === null || next > position)) {
      position = next
      for (const key of open.keys()) {
        if (key <= next) {
          open.delete(key)
          unfinished.delete(key)
        }
      }
    }
    for (const [k, v] of lastSeq) if (v.us < watermarkUs - settleMs * 1000) lastSeq.delete(k)

    // Pages the settle listing left are known (the tail listing went past them); only a full
    // tail page can hide commits nothing announced.
    return { more: tail?.next !== undefined || uncovered }
  }

  /** Extends `coverage` by a listing sent after notices may have been missed (see there). */
  const cover = (l: Listed): void => {
    const c = coverage
    if (c === null || l.sentAt < c.since) return
    // The settle listing started at the position, so it continues what was covered.
    if (l.page.next === undefined) {
      coverage = null
      return
    }
    let through = maxKey(c.through, l.page.keys.at(-1) ?? null)
    if (
      l.tail !== undefined &&
      l.tailFrom !== undefined &&
      through !== null &&
      l.tailFrom <= through
    ) {
      if (l.tail.next === undefined) {
        coverage = null
        return
      }
      through = maxKey(through, l.tail.keys.at(-1) ?? null)
    }
    coverage = { since: c.since, through }
  }

  const isComplete = (om: OpenSegment): boolean =>
    om.entries !== null && om.entries.every((e) => om.done.has(e.event_id))

  let lastMetricsLog = 0
  const logMetrics = (): void => {
    const now = mono()
    if (now - lastMetricsLog < metricsLogIntervalMs) return
    lastMetricsLog = now
    log.info(
      {
        ...m,
        mean_flush_ms: m.flushes === 0 ? 0 : Math.round((m.flushMsTotal / m.flushes) * 10) / 10,
        dedup_window: dedup.size,
      },
      'publisher metrics',
    )
  }

  let lastPresenceAt = -Infinity
  let presenceSaid: PublisherPresence['role'] | null = null
  let presenceInFlight: Promise<void> | null = null
  /** Tells `presence` where this publisher stands when due (or its role changed); one at a time. */
  const sayPresence = (force = false): Promise<void> | undefined => {
    if (options.presence === undefined || presenceInFlight !== null)
      return presenceInFlight ?? undefined
    if (!force && m.role === presenceSaid && mono() - lastPresenceAt < heartbeatMs) return
    lastPresenceAt = mono()
    presenceSaid = m.role
    presenceInFlight = options
      .presence({ id, role: m.role, position })
      .catch((error: unknown) => log.debug({ err: String(error) }, 'presence not recorded'))
      .finally(() => {
        presenceInFlight = null
      })
    return presenceInFlight
  }

  let running: Promise<void> | null = null

  let failingWith: string | null = null
  let failures = 0

  const loop = async (signal: AbortSignal): Promise<void> => {
    let backoffMs = 0
    lastMetricsLog = mono()
    // The topics it knows of are created at start (others on first use).
    for (;;) {
      try {
        await ensureTopics([defaultTopic, ...Object.values(routes)].map((t) => topicPrefix + t))
        break
      } catch (error) {
        backoffMs = Math.min(Math.max(backoffMs * 2, 100), pollIntervalMs)
        log.warn(
          { err: String(error), retry_in_ms: backoffMs },
          'could not create topics yet; retrying',
        )
        await sleepUntil(backoffMs, signal, { fn: null })
        if (signal.aborted) return
      }
    }
    backoffMs = 0
    wantList = true
    // The first reading of the key clock, before the first listing (a short wait: a database that
    // does not answer yet only delays settling).
    await Promise.race([keyTime.measure(), new Promise((r) => setTimeout(r, 1_000).unref())])
    while (!signal.aborted) {
      watchKeyClock()
      const heldBefore = m.held
      const listing = wantList || mono() - lastListAt >= listIntervalMs
      wantList = false
      noticed = false
      try {
        if (m.role !== 'active') {
          if (await tryToLead()) {
            m.role = 'active'
            wantList = true
          } else {
            m.role = 'standby'
          }
        }
        if (m.role === 'active') {
          // The listing runs beside the cycles: notices are published while it is under way.
          if ((listing || wantList) && !listingInFlight && listed === undefined) startListing()
          const got = listed
          listed = undefined
          if (got !== undefined && 'error' in got) throw got.error
          // A listing that left pages unread goes on at once.
          if ((await cycle(got?.ok)).more) wantList = true
          const due = mono() - lastSaveAt >= heartbeatMs
          // Soon after publishing; otherwise (an idle watermark moving) with the heartbeat only.
          const moved = position !== lastSavedPosition && m.published !== publishedAtSave
          if ((moved && mono() - lastSaveAt >= 1_000) || due) {
            if (!(await save())) {
              // Replaced meanwhile: an operator's reset (adopt it) or another publisher (stand by).
              const { checkpoint, etag: tag } = await loadCheckpoint(store)
              if (checkpoint !== null && (checkpoint.owner === id || checkpoint.owner === '')) {
                log.warn(
                  { position: checkpoint.last_index_key },
                  'checkpoint was reset; adopting it',
                )
                adopt(checkpoint, tag)
                await save()
              } else {
                log.warn(
                  { owner: checkpoint?.owner },
                  'another publisher owns the checkpoint; standing by',
                )
                m.role = 'standby'
                observedTag = tag
                observedSince = mono()
              }
            }
          }
        }
        backoffMs = 0
        if (failingWith !== null) {
          log.info({ failures }, 'publisher resumed')
          failingWith = null
          failures = 0
          m.failing = 0
        }
      } catch (error) {
        backoffMs = Math.min(Math.max(backoffMs * 2, 100), pollIntervalMs)
        failingWith = isCairnError(error) ? error.message : String(error)
        failures++
        m.failing = 1
        // Said when it starts failing, then about every minute while it lasts.
        if (failures === 1 || failures % 20 === 0) {
          log.warn(
            { err: failingWith, retry_in_ms: backoffMs, failures },
            'publisher cycle failed; retrying',
          )
        }
        // A producer still failing after several cycles may be stuck on a connection that does
        // not recover by itself (seen after a broker hung): the next flush opens a new one.
        if (producer !== null && failures % RENEW_PRODUCER_AFTER === 0) {
          const old = producer
          producer = null
          log.warn({ failures }, 'renewing the Kafka producer')
          await old.close().catch(() => {})
        }
      }
      logMetrics()
      void sayPresence()
      if (signal.aborted) break
      if (backoffMs > 0) {
        await sleepUntil(backoffMs, signal, { fn: null })
        wantList = true
      } else if (wantList || noticed || listed !== undefined) {
        // More to do at once: pages left unread, a new leader, notices or a listing that came
        // meanwhile.
      } else if (m.held > heldBefore) {
        // Held events wait for a predecessor that another writer is about to index: look again
        // soon (a notice may announce it first; a listing does when due).
        await sleepUntil(50, signal, wakeup)
      } else {
        await sleepUntil(pollIntervalMs, signal, wakeup)
        // Neither a wake, a notice nor a listing: the poll timer ran out.
        if (!noticed && listed === undefined && !listingInFlight) wantList = true
      }
    }
  }

  const run = (signal?: AbortSignal): Promise<void> => {
    if (running !== null) return running
    const onAbort = () => stop.abort()
    signal?.addEventListener('abort', onAbort, { once: true })
    running = loop(stop.signal).finally(async () => {
      signal?.removeEventListener('abort', onAbort)
      if (m.role === 'active') {
        // Leave the newest position behind, unowned: whoever comes next takes over at once.
        await save(true).catch(() => false)
      }
      m.role = 'stopped'
      await presenceInFlight
      await sayPresence(true)
      await producer?.close().catch(() => {})
      log.info({ published: m.published }, 'publisher stopped')
    })
    return running
  }

  const close = async (): Promise<void> => {
    stop.abort()
    wakeup.fn?.()
    await running
  }

  return {
    run,
    wake,
    noteCommit(notice) {
      forget(notice.segmentKey)
      noted.set(notice.segmentKey, notice.entries)
      notedChars += sizeOf(notice.entries)
      // Bound the cache: segments never listed (another prefix, closed run), or noticed while
      // nothing reads them (a standby), must not pile up; a forgotten one is read when listed.
      while (noted.size > NOTED_MAX || (notedChars > notedMaxChars && noted.size > 1)) {
        forget(noted.keys().next().value as string)
      }
      noteKey(notice.segmentKey)
    },
    noteSegmentKey: noteKey,
    noteGap() {
      distrust()
      wakeup.fn?.()
    },
    metrics: () => ({ ...m }),
    keyClock: () => keyTime.status(),
    failingWith: () => failingWith,
    close,
    [Symbol.asyncDispose]: close,
  }
}

/** Lists the quarantined segments' records (what the publisher set aside, and why). */
export const listQuarantine = async (
  store: ObjectStore,
): Promise<{ key: string; reason: string; quarantined_at: string }[]> => {
  const out: { key: string; reason: string; quarantined_at: string }[] = []
  for await (const key of listAll(store, QUARANTINE_PREFIX)) {
    const got = await store.get(key)
    if (got !== null)
      out.push(JSON.parse(new TextDecoder().decode(got.body)) as (typeof out)[number])
  }
  return out
}
