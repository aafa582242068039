import { CairnError, ErrorCode, isCairnError } from '../core/errors.ts'
import type { KeyClock } from '../core/ports/clock.ts'
import type { Sql } from '../core/ports/sql.ts'

/**
 * The sequence allocator and the stream index: per-aggregate sequence numbers 1, 2, 3 … reserved
 * atomically in PostgreSQL (PGlite embedded), with optimistic concurrency, and for every appended
 * event id its sequence and where its bytes are (segment and line). A group of appends is
 * reserved in one round trip (`reserve_batch`, migrations/001), together with its segment's row.
 *
 * Guarantees: a sequence is given to at most one event; a conflict or a duplicate changes nothing;
 * outcomes come back in the order of the requests. All of it is derived from the bucket and can be
 * rebuilt from it (`cairn reconcile`, src/event-store/reconcile.ts).
 */
/** The allocator's handler of an aggregate type: `<handler prefix>:<aggregate type>`. */
export const handlerOf = (handlerPrefix: string, aggregateType: string): string =>
  `${handlerPrefix}:${aggregateType}`

export type ReserveRequest = {
  /** `<handler prefix>:<aggregate type>` */
  readonly handler: string
  readonly aggregateId: string
  readonly expectedSeq: number | null
  readonly eventIds: readonly string[]
  /** Idempotency hash per event (commands), null where not compared (domain events). */
  readonly hashes: readonly (string | null)[]
}

export type SegmentState = 'reserved' | 'stored' | 'gap'

/** A segment's row: its key is `segmentKey(atUs, writer, n)`. */
export type SegmentRef = {
  readonly id: number
  readonly atUs: number
  readonly writer: string
  readonly n: number
}

/** One event in the stream index. `state` is its segment's. */
export type IndexedRow = {
  readonly eventId: string
  readonly seq: number
  readonly state: SegmentState
  readonly hash: string | null
  readonly segment: SegmentRef
  /** The line of its envelope in the segment, from 0. */
  readonly position: number
}

/**
 * `prevPending`: the event just before these is in a segment not yet confirmed stored (another
 * append in flight); the publisher keeps per-aggregate order by holding these until it is out.
 */
export type ReserveResult =
  | { readonly outcome: 'reserved'; readonly firstSeq: number; readonly prevPending: boolean }
  | { readonly outcome: 'conflict'; readonly actualSeq: number }
  | {
      readonly outcome: 'duplicate'
      readonly rows: readonly IndexedRow[]
      readonly prevPending: boolean
    }
  | { readonly outcome: 'mismatch'; readonly reason: string }

export type ReserveResults = {
  /** When the reservation was made (database clock, microseconds since the epoch). */
  readonly atUs: number
  /** The group's segment row, null when nothing was reserved. */
  readonly segmentId: number | null
  readonly results: readonly ReserveResult[]
  /** The registry's identity: changes when it is created anew or reconciled. */
  readonly instance: string
  /** When the database server started (µs): changes when it restarts, e.g. after a restore. */
  readonly startedUs: number
}

export type RegistryMeta = {
  readonly instance: string
  /** Every segment keyed before this time (µs) is known to the registry. */
  readonly verifiedThroughUs: number
  readonly reconciling: boolean
  /** When the database server started (µs). */
  readonly startedUs: number
}

/** One event found in the bucket, for `cairn reconcile`. */
export type FoundEvent = {
  readonly eventId: string
  readonly handler: string
  readonly aggregateId: string
  readonly seq: number
  readonly hash: string | null
  readonly position: number
}

/** One segment found in the bucket, with its events (none for a gap marker). */
export type FoundSegment = {
  readonly atUs: number
  readonly writer: string
  readonly n: number
  readonly state: 'stored' | 'gap'
  readonly events: readonly FoundEvent[]
}

export type SequenceAllocator = {
  readonly schema: string
  /** Reserves a group; `stored` are segments confirmed since, `writer`/`n` name its segment. */
  reserve(
    requests: readonly ReserveRequest[],
    stored: readonly number[],
    writer: string,
    n: number,
  ): Promise<ReserveResults>
  markStored(segmentIds: readonly number[]): Promise<void>
  markGap(segmentIds: readonly number[]): Promise<void>
  /** A segment row of its own (the repair's re-index of a late segment). */
  reserveSegment(writer: string, n: number): Promise<SegmentRef>
  current(handler: string, aggregateId: string): Promise<number>
  /**
   * The database's clock now (`clock_timestamp()`, microseconds since the epoch): the clock that
   * stamps reservations, hence segment keys. The publisher settles on it (docs/publisher.md).
   */
  now(): Promise<number>
  lookup(eventId: string): Promise<(IndexedRow & { handler: string; aggregateId: string }) | null>
  /** The aggregate's indexed events with fromSeq ≤ seq ≤ toSeq, in sequence order. */
  stream(
    handler: string,
    aggregateId: string,
    fromSeq: number,
    toSeq: number,
  ): Promise<IndexedRow[]>
  /** Segments still 'reserved' longer than this, oldest first. */
  staleSegments(olderThanMs: number, limit: number): Promise<SegmentRef[]>
  /** Segments keyed in [fromUs, toUs] (µs), any state. */
  segmentsKeyedBetween(fromUs: number, toUs: number): Promise<SegmentRef[]>
  meta(): Promise<RegistryMeta>
  /** Raises `verified_through_us` (never lowers it). */
  advanceVerified(us: number): Promise<void>
  /** Refuses reservations from now on and empties the write-side tables (reconcile). */
  beginReconcile(): Promise<void>
  /** Records segments found in the bucket, in key order (reconcile); returns events recorded. */
  recordFound(segments: readonly FoundSegment[]): Promise<{ recorded: number; clashes: string[] }>
  /** Sets every aggregate's sequence to its last recorded one, a new instance, and reopens. */
  endReconcile(verifiedThroughUs: number): Promise<void>
}

/**
 * The database's clock (`clock_timestamp()`, microseconds since the epoch): the clock that stamps
 * reservations and so segment keys, read by the publisher to settle (docs/publisher.md).
 */
export const databaseClock = (sql: Sql): KeyClock => ({
  async now() {
    const rows = await sql.query<{ us: string | number }>(
      `SELECT floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS us`,
    )
    return Number(rows[0]?.us)
  },
})

/** The row `reserve_batch` (migrations/001) returns; bigints may come as strings. */
type BatchOutcome = {
  at_us: number | string
  segment_id: number | string | null
  outcomes: (ReserveResult['outcome'] | null)[] | null
  seqs: (number | string | null)[] | null
  prev_pending: (boolean | null)[] | null
  reasons: (string | null)[] | null
  dup_req: number[] | null
  dup_ids: string[] | null
  dup_seqs: (number | string)[] | null
  dup_states: SegmentState[] | null
  dup_hashes: (string | null)[] | null
  dup_segments: (number | string)[] | null
  dup_seg_us: (number | string)[] | null
  dup_seg_writers: string[] | null
  dup_seg_ns: (number | string)[] | null
  dup_positions: number[] | null
  instance: string
  started_us: number | string
}

type IndexRowSql = {
  event_id: string
  seq: number | string
  state: SegmentState
  hash: string | null
  segment_id: number | string
  at_us: number | string
  writer: string
  n: number | string
  position: number
}

const INDEX_COLUMNS = `e.event_id, e.sequence_number AS seq, s.state, e.hash, e.segment_id, s.at_us, s.writer, s.n, e.position`

const toIndexed = (r: IndexRowSql): IndexedRow => ({
  eventId: r.event_id,
  seq: Number(r.seq),
  state: r.state,
  hash: r.hash,
  segment: { id: Number(r.segment_id), atUs: Number(r.at_us), writer: r.writer, n: Number(r.n) },
  position: Number(r.position),
})

const toSegment = (r: {
  id: number | string
  at_us: number | string
  writer: string
  n: number | string
}): SegmentRef => ({ id: Number(r.id), atUs: Number(r.at_us), writer: r.writer, n: Number(r.n) })

const RETRYABLE_SQLSTATES = new Set(['40001', '40P01'])

export const createSequenceAllocator = (options: {
  sql: Sql
  schema: string
}): SequenceAllocator => {
  const { sql, schema } = options

  const withRetry = async <T>(fn: () => Promise<T>): Promise<T> => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn()
      } catch (error) {
        const code = (error as { code?: unknown }).code
        if (attempt < 5 && typeof code === 'string' && RETRYABLE_SQLSTATES.has(code)) continue
        if (isCairnError(error)) throw error
        if (code === '55000' && /reconciled/.test((error as Error).message)) {
          throw new CairnError(
            ErrorCode.REGISTRY_RECONCILING,
            'appends are paused: the registry is being reconciled from the bucket (cairn reconcile)',
            { cause: error, retryable: true },
          )
        }
        throw new CairnError(
          ErrorCode.SQL_ERROR,
          `sequence allocator: ${(error as Error).message}`,
          { cause: error, retryable: true },
        )
      }
    }
  }

  return {
    schema,
    async reserve(requests, stored, writer, n) {
      const ids: string[] = []
      const hashes: (string | null)[] = []
      for (const r of requests) {
        ids.push(...r.eventIds)
        hashes.push(...r.eventIds.map((_, k) => r.hashes[k] ?? null))
      }
      const rows = await withRetry(() =>
        sql.query<BatchOutcome>(
          `SELECT * FROM ${schema}.reserve_batch($1::text[], $2::text[], $3::bigint[], $4::int[], $5::text[], $6::text[], $7::bigint[], $8::text, $9::bigint)`,
          [
            requests.map((r) => r.handler),
            requests.map((r) => r.aggregateId),
            requests.map((r) => r.expectedSeq),
            requests.map((r) => r.eventIds.length),
            ids,
            hashes,
            stored,
            writer,
            n,
          ],
        ),
      )
      const out = rows[0]
      if (out === undefined) throw new CairnError(ErrorCode.SQL_ERROR, 'reserve_batch gave no row')
      const duplicates = new Map<number, IndexedRow[]>()
      ;(out.dup_req ?? []).forEach((req, k) => {
        const list = duplicates.get(req - 1) ?? []
        list.push(
          toIndexed({
            event_id: out.dup_ids?.[k] ?? '',
            seq: out.dup_seqs?.[k] ?? 0,
            state: out.dup_states?.[k] ?? 'reserved',
            hash: out.dup_hashes?.[k] ?? null,
            segment_id: out.dup_segments?.[k] ?? 0,
            at_us: out.dup_seg_us?.[k] ?? 0,
            writer: out.dup_seg_writers?.[k] ?? '',
            n: out.dup_seg_ns?.[k] ?? 0,
            position: out.dup_positions?.[k] ?? -1,
          }),
        )
        duplicates.set(req - 1, list)
      })
      const results = requests.map((_, i): ReserveResult => {
        const outcome = out.outcomes?.[i]
        const seq = Number(out.seqs?.[i])
        const prevPending = out.prev_pending?.[i] === true
        switch (outcome) {
          case 'reserved':
            return { outcome, firstSeq: seq, prevPending }
          case 'conflict':
            return { outcome, actualSeq: seq }
          case 'duplicate':
            return { outcome, rows: duplicates.get(i) ?? [], prevPending }
          case 'mismatch':
            return { outcome, reason: out.reasons?.[i] ?? 'idempotency mismatch' }
          default:
            throw new CairnError(
              ErrorCode.SQL_ERROR,
              `reserve_batch gave no outcome for append ${i + 1} of ${requests.length}`,
            )
        }
      })
      return {
        atUs: Number(out.at_us),
        segmentId: out.segment_id === null ? null : Number(out.segment_id),
        results,
        instance: out.instance,
        startedUs: Number(out.started_us),
      }
    },
    async markStored(segmentIds) {
      if (segmentIds.length === 0) return
      await withRetry(() =>
        sql.query(
          `UPDATE ${schema}.segments SET state = 'stored' WHERE id = ANY ($1::bigint[]) AND state = 'reserved'`,
          [segmentIds],
        ),
      )
    },
    async markGap(segmentIds) {
      if (segmentIds.length === 0) return
      await withRetry(() =>
        sql.query(`UPDATE ${schema}.segments SET state = 'gap' WHERE id = ANY ($1::bigint[])`, [
          segmentIds,
        ]),
      )
    },
    async reserveSegment(writer, n) {
      const rows = await withRetry(() =>
        sql.query<{ id: string; at_us: string; writer: string; n: string }>(
          `INSERT INTO ${schema}.segments (at_us, writer, n, state)
           VALUES (floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint, $1, $2, 'reserved')
           RETURNING id, at_us, writer, n`,
          [writer, n],
        ),
      )
      const row = rows[0]
      if (row === undefined) throw new CairnError(ErrorCode.SQL_ERROR, 'no segment row returned')
      return toSegment(row)
    },
    now: () => withRetry(() => databaseClock(sql).now()),
    async current(handler, aggregateId) {
      const rows = await withRetry(() =>
        sql.query<{ last_sequence: string }>(
          `SELECT last_sequence FROM ${schema}.aggregate_sequences WHERE handler = $1 AND aggregate_id = $2`,
          [handler, aggregateId],
        ),
      )
      return rows.length === 0 ? 0 : Number(rows[0]?.last_sequence)
    },
    async lookup(eventId) {
      const rows = await withRetry(() =>
        sql.query<IndexRowSql & { handler: string; aggregate_id: string }>(
          `SELECT ${INDEX_COLUMNS}, e.handler, e.aggregate_id
             FROM ${schema}.appended_events e JOIN ${schema}.segments s ON s.id = e.segment_id
            WHERE e.event_id = $1`,
          [eventId],
        ),
      )
      const r = rows[0]
      return r === undefined
        ? null
        : { ...toIndexed(r), handler: r.handler, aggregateId: r.aggregate_id }
    },
    async stream(handler, aggregateId, fromSeq, toSeq) {
      const rows = await withRetry(() =>
        sql.query<IndexRowSql>(
          `SELECT ${INDEX_COLUMNS}
             FROM ${schema}.appended_events e JOIN ${schema}.segments s ON s.id = e.segment_id
            WHERE e.handler = $1 AND e.aggregate_id = $2 AND e.sequence_number BETWEEN $3 AND $4
            ORDER BY e.sequence_number`,
          [handler, aggregateId, fromSeq, toSeq],
        ),
      )
      return rows.map(toIndexed)
    },
    async staleSegments(olderThanMs, limit) {
      const rows = await withRetry(() =>
        sql.query<{ id: string; at_us: string; writer: string; n: string }>(
          `SELECT id, at_us, writer, n FROM ${schema}.segments
            WHERE state = 'reserved' AND reserved_at < now() - make_interval(secs => $1::double precision / 1000)
            ORDER BY reserved_at LIMIT $2`,
          [olderThanMs, limit],
        ),
      )
      return rows.map(toSegment)
    },
    async segmentsKeyedBetween(fromUs, toUs) {
      const rows = await withRetry(() =>
        sql.query<{ id: string; at_us: string; writer: string; n: string }>(
          `SELECT id, at_us, writer, n FROM ${schema}.segments WHERE at_us BETWEEN $1 AND $2`,
          [fromUs, toUs],
        ),
      )
      return rows.map(toSegment)
    },
    async meta() {
      const rows = await withRetry(() =>
        sql.query<{
          instance: string
          verified_through_us: string
          reconciling: boolean
          started_us: string
        }>(
          `SELECT instance, verified_through_us, reconciling,
                  floor(extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint AS started_us
             FROM ${schema}.registry_meta`,
        ),
      )
      const r = rows[0]
      if (r === undefined) throw new CairnError(ErrorCode.SQL_ERROR, 'registry_meta has no row')
      return {
        instance: r.instance,
        verifiedThroughUs: Number(r.verified_through_us),
        reconciling: r.reconciling,
        startedUs: Number(r.started_us),
      }
    },
    async advanceVerified(us) {
      await withRetry(() =>
        sql.query(
          `UPDATE ${schema}.registry_meta SET verified_through_us = $1 WHERE verified_through_us < $1 AND NOT reconciling`,
          [Math.floor(us)],
        ),
      )
    },
    async beginReconcile() {
      await withRetry(() =>
        sql.transaction(async (tx) => {
          await tx.query(`UPDATE ${schema}.registry_meta SET reconciling = true`)
          // Waits for the reservations in progress (they lock aggregate rows) to end.
          await tx.query(
            `TRUNCATE ${schema}.appended_events, ${schema}.segments, ${schema}.aggregate_sequences`,
          )
        }),
      )
    },
    async recordFound(segments) {
      if (segments.length === 0) return { recorded: 0, clashes: [] }
      return withRetry(() =>
        sql.transaction(async (tx) => {
          const ids = await tx.query<{ id: string; at_us: string; writer: string; n: string }>(
            `INSERT INTO ${schema}.segments (at_us, writer, n, state)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[])
             ON CONFLICT (at_us, writer, n) DO NOTHING
             RETURNING id, at_us, writer, n`,
            [
              segments.map((g) => g.atUs),
              segments.map((g) => g.writer),
              segments.map((g) => g.n),
              segments.map((g) => g.state),
            ],
          )
          const idOf = new Map(ids.map((r) => [`${r.at_us}-${r.writer}-${r.n}`, Number(r.id)]))
          const events: (FoundEvent & { segmentId: number })[] = []
          for (const g of segments) {
            const id = idOf.get(`${g.atUs}-${g.writer}-${g.n}`)
            if (id === undefined) continue
            for (const e of g.events) events.push({ ...e, segmentId: id })
          }
          if (events.length === 0) return { recorded: 0, clashes: [] }
          // The first segment that holds an event id is where it is read (a repair's copy comes
          // later); a second event at a sequence already taken is reported, never recorded.
          const inserted = await tx.query<{ event_id: string }>(
            `INSERT INTO ${schema}.appended_events
                    (event_id, handler, aggregate_id, sequence_number, hash, segment_id, position)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::int[])
             ON CONFLICT DO NOTHING RETURNING event_id`,
            [
              events.map((e) => e.eventId),
              events.map((e) => e.handler),
              events.map((e) => e.aggregateId),
              events.map((e) => e.seq),
              events.map((e) => e.hash),
              events.map((e) => e.segmentId),
              events.map((e) => e.position),
            ],
          )
          const got = new Set(inserted.map((r) => r.event_id))
          const missed = events.filter((e) => !got.has(e.eventId)).map((e) => e.eventId)
          let clashes: string[] = []
          if (missed.length > 0) {
            // Not recorded: already there from an earlier segment (a copy), or a clash.
            const known = await tx.query<{ event_id: string }>(
              `SELECT event_id FROM ${schema}.appended_events WHERE event_id = ANY ($1::text[])`,
              [missed],
            )
            const there = new Set(known.map((r) => r.event_id))
            clashes = missed.filter((id) => !there.has(id))
          }
          return { recorded: got.size, clashes }
        }),
      )
    },
    async endReconcile(verifiedThroughUs) {
      await withRetry(() =>
        sql.transaction(async (tx) => {
          await tx.query(
            `INSERT INTO ${schema}.aggregate_sequences (handler, aggregate_id, last_sequence)
             SELECT handler, aggregate_id, max(sequence_number) FROM ${schema}.appended_events
              GROUP BY handler, aggregate_id
             ON CONFLICT (handler, aggregate_id) DO UPDATE SET last_sequence = EXCLUDED.last_sequence`,
          )
          await tx.query(
            `UPDATE ${schema}.registry_meta
                SET reconciling = false, verified_through_us = $1,
                    instance = md5(random()::text || clock_timestamp()::text)`,
            [Math.floor(verifiedThroughUs)],
          )
        }),
      )
    },
  }
}
