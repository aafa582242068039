import { CairnError, ErrorCode } from '../core/errors.ts'
import type { KeyClock } from '../core/ports/clock.ts'
import type { Sql } from '../core/ports/sql.ts'

/**
 * The sequence allocator: per-aggregate sequence numbers 1, 2, 3 … reserved atomically in
 * PostgreSQL (PGlite embedded), with optimistic concurrency and the record of appended event ids.
 * A group of appends is reserved in one round trip (`reserve_batch`, migrations/007; its rules
 * are those of `reserve_sequences`, migrations/001, which older writers still call).
 *
 * Guarantees: a sequence is given to at most one event; a conflict or a duplicate changes nothing;
 * outcomes come back in the order of the requests.
 */
export type ReserveRequest = {
  /** `<handler prefix>:<aggregate type>` */
  readonly handler: string
  readonly aggregateId: string
  readonly expectedSeq: number | null
  readonly eventIds: readonly string[]
  /** Idempotency hash per event (commands), null where not compared (domain events). */
  readonly hashes: readonly (string | null)[]
}

export type ReservationState = 'reserved' | 'stored' | 'gap'

export type ReservedRow = {
  readonly eventId: string
  readonly seq: number
  readonly state: ReservationState
  readonly hash: string | null
}

/**
 * `prevPending`: the event just before these is reserved but not yet confirmed stored (another
 * append in flight); the publisher keeps per-aggregate order by holding these until it is out.
 */
export type ReserveResult =
  | { readonly outcome: 'reserved'; readonly firstSeq: number; readonly prevPending: boolean }
  | { readonly outcome: 'conflict'; readonly actualSeq: number }
  | {
      readonly outcome: 'duplicate'
      readonly rows: readonly ReservedRow[]
      readonly prevPending: boolean
    }
  | { readonly outcome: 'mismatch'; readonly reason: string }

export type ReserveResults = {
  /** When the reservation was made (database clock, microseconds since the epoch). */
  readonly atUs: number
  readonly results: readonly ReserveResult[]
}

export type StaleReservation = {
  readonly eventId: string
  readonly handler: string
  readonly aggregateId: string
  readonly seq: number
}

export type SequenceAllocator = {
  readonly schema: string
  reserve(requests: readonly ReserveRequest[], stored: readonly string[]): Promise<ReserveResults>
  markStored(eventIds: readonly string[]): Promise<void>
  markGap(eventIds: readonly string[]): Promise<void>
  /** Drops these reservations and raises the aggregate's sequence to at least `bucketMax`. */
  reseed(
    handler: string,
    aggregateId: string,
    bucketMax: number,
    dropEventIds: readonly string[],
  ): Promise<void>
  current(handler: string, aggregateId: string): Promise<number>
  /**
   * The database's clock now (`clock_timestamp()`, microseconds since the epoch): the clock that
   * stamps reservations, hence manifest keys. The publisher settles on it (docs/publisher.md).
   */
  now(): Promise<number>
  lookup(eventId: string): Promise<(ReservedRow & { handler: string; aggregateId: string }) | null>
  staleReservations(olderThanMs: number, limit: number): Promise<StaleReservation[]>
  /** True when the allocator holds no aggregate at all (fresh or lost registry). */
  isEmpty(): Promise<boolean>
  /** Records an event found in the bucket (registry rebuild). */
  recordStored(rows: readonly (StaleReservation & { hash: string | null })[]): Promise<void>
}

/**
 * The database's clock (`clock_timestamp()`, microseconds since the epoch): the clock that stamps
 * reservations and so manifest keys, read by the publisher to settle (docs/publisher.md).
 */
export const databaseClock = (sql: Sql): KeyClock => ({
  async now() {
    const rows = await sql.query<{ us: string | number }>(
      `SELECT floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS us`,
    )
    return Number(rows[0]?.us)
  },
})

/** The row `reserve_batch` (migrations/007) returns; bigints may come as strings. */
type BatchOutcome = {
  at_us: number | string
  outcomes: (ReserveResult['outcome'] | null)[] | null
  seqs: (number | string | null)[] | null
  prev_pending: (boolean | null)[] | null
  reasons: (string | null)[] | null
  dup_req: number[] | null
  dup_ids: string[] | null
  dup_seqs: (number | string)[] | null
  dup_states: ReservationState[] | null
  dup_hashes: (string | null)[] | null
}

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
        throw new CairnError(
          ErrorCode.SQL_ERROR,
          `sequence allocator: ${(error as Error).message}`,
          {
            cause: error,
            retryable: true,
          },
        )
      }
    }
  }

  const toRow = (r: {
    event_id: string
    seq: number | string
    state: ReservationState
    hash: string | null
  }): ReservedRow => ({
    eventId: r.event_id,
    seq: Number(r.seq),
    state: r.state,
    hash: r.hash,
  })

  return {
    schema,
    async reserve(requests, stored) {
      const ids: string[] = []
      const hashes: (string | null)[] = []
      for (const r of requests) {
        ids.push(...r.eventIds)
        hashes.push(...r.eventIds.map((_, k) => r.hashes[k] ?? null))
      }
      const rows = await withRetry(() =>
        sql.query<BatchOutcome>(
          `SELECT * FROM ${schema}.reserve_batch($1::text[], $2::text[], $3::bigint[], $4::int[], $5::text[], $6::text[], $7::text[])`,
          [
            requests.map((r) => r.handler),
            requests.map((r) => r.aggregateId),
            requests.map((r) => r.expectedSeq),
            requests.map((r) => r.eventIds.length),
            ids,
            hashes,
            stored,
          ],
        ),
      )
      const out = rows[0]
      if (out === undefined) throw new CairnError(ErrorCode.SQL_ERROR, 'reserve_batch gave no row')
      const duplicates = new Map<number, ReservedRow[]>()
      ;(out.dup_req ?? []).forEach((req, k) => {
        const list = duplicates.get(req - 1) ?? []
        list.push(
          toRow({
            event_id: out.dup_ids?.[k] ?? '',
            seq: out.dup_seqs?.[k] ?? 0,
            state: out.dup_states?.[k] ?? 'reserved',
            hash: out.dup_hashes?.[k] ?? null,
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
      return { atUs: Number(out.at_us), results }
    },
    async markStored(eventIds) {
      if (eventIds.length === 0) return
      await withRetry(() =>
        sql.query(
          // Not `state = 'reserved'`: that lets the planner go through the partial index of open
          // reservations, whose entries of confirmed ones stay until a vacuum (migrations/007).
          `UPDATE ${schema}.appended_events SET state = 'stored' WHERE event_id = ANY ($1::text[]) AND state <> 'stored' AND state <> 'gap'`,
          [eventIds],
        ),
      )
    },
    async markGap(eventIds) {
      if (eventIds.length === 0) return
      await withRetry(() =>
        sql.query(
          `UPDATE ${schema}.appended_events SET state = 'gap' WHERE event_id = ANY ($1::text[])`,
          [eventIds],
        ),
      )
    },
    async reseed(handler, aggregateId, bucketMax, dropEventIds) {
      await withRetry(() =>
        sql.transaction(async (tx) => {
          await tx.query(
            `DELETE FROM ${schema}.appended_events WHERE event_id = ANY ($1::text[]) AND state = 'reserved'`,
            [dropEventIds],
          )
          await tx.query(
            `INSERT INTO ${schema}.aggregate_sequences AS s (handler, aggregate_id, last_sequence) VALUES ($1, $2, $3)
             ON CONFLICT (handler, aggregate_id)
             DO UPDATE SET last_sequence = GREATEST(s.last_sequence, EXCLUDED.last_sequence), updated_at = now()`,
            [handler, aggregateId, bucketMax],
          )
        }),
      )
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
        sql.query<{
          event_id: string
          seq: string
          state: ReservationState
          hash: string | null
          handler: string
          aggregate_id: string
        }>(
          `SELECT event_id, sequence_number AS seq, state, hash, handler, aggregate_id
             FROM ${schema}.appended_events WHERE event_id = $1`,
          [eventId],
        ),
      )
      const r = rows[0]
      return r === undefined
        ? null
        : { ...toRow(r), handler: r.handler, aggregateId: r.aggregate_id }
    },
    async staleReservations(olderThanMs, limit) {
      const rows = await withRetry(() =>
        sql.query<{ event_id: string; handler: string; aggregate_id: string; seq: string }>(
          `SELECT event_id, handler, aggregate_id, sequence_number AS seq FROM ${schema}.appended_events
            WHERE state = 'reserved' AND reserved_at < now() - make_interval(secs => $1::double precision / 1000)
            ORDER BY reserved_at LIMIT $2`,
          [olderThanMs, limit],
        ),
      )
      return rows.map((r) => ({
        eventId: r.event_id,
        handler: r.handler,
        aggregateId: r.aggregate_id,
        seq: Number(r.seq),
      }))
    },
    async isEmpty() {
      const rows = await withRetry(() =>
        sql.query(`SELECT 1 FROM ${schema}.aggregate_sequences LIMIT 1`),
      )
      return rows.length === 0
    },
    async recordStored(rows) {
      if (rows.length === 0) return
      await withRetry(() =>
        sql.transaction(async (tx) => {
          await tx.query(
            `INSERT INTO ${schema}.appended_events (event_id, handler, aggregate_id, sequence_number, hash, state)
             SELECT * , 'stored' FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[])
             ON CONFLICT DO NOTHING`,
            [
              rows.map((r) => r.eventId),
              rows.map((r) => r.handler),
              rows.map((r) => r.aggregateId),
              rows.map((r) => r.seq),
              rows.map((r) => r.hash),
            ],
          )
          await tx.query(
            `INSERT INTO ${schema}.aggregate_sequences AS s (handler, aggregate_id, last_sequence)
             SELECT handler, aggregate_id, max(seq) FROM unnest($1::text[], $2::text[], $3::bigint[]) AS t(handler, aggregate_id, seq)
              GROUP BY handler, aggregate_id
             ON CONFLICT (handler, aggregate_id)
             DO UPDATE SET last_sequence = GREATEST(s.last_sequence, EXCLUDED.last_sequence), updated_at = now()`,
            [rows.map((r) => r.handler), rows.map((r) => r.aggregateId), rows.map((r) => r.seq)],
          )
        }),
      )
    },
  }
}
