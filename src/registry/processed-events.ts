import { randomBytes } from 'node:crypto'
import { CairnError, ErrorCode } from '../core/errors.ts'
import type { Sql, SqlQueryable } from '../core/ports/sql.ts'

/**
 * The processed-event registry in PostgreSQL (PGlite embedded): which handler processed which event
 * (C1), who holds a claim and until when (C2), the per-aggregate ordering guard (C3), a single
 * winner per claim (C4), failed and parked events (C5). The database's clock times every lease, so
 * processes with skewed clocks agree. SQL: migrations/002_registry.sql (the tables; claim_events,
 * set-based: a few statements per batch; claim_batch_in_tx, claims in the applying transaction,
 * recorded once, done).
 *
 * Claim rules, per (handler, event); claims of one (handler, aggregate) take turns under a lock:
 * 1. done, skipped_stale or skipped → `duplicate` (acknowledge, do not run the effect again);
 *    failed (dead-lettered) → `failed`, parked → `parked`: never re-claimed by a redelivery;
 *    processing under another owner's live lease, that owner not known gone (stopped, or no owner
 *    heartbeat for `ownerTimeoutMs`) → `in_progress`. Anything else — new, retrying (released
 *    after a retryable error or by an operator), this owner's own claim, a lapsed lease, a gone
 *    owner — is a candidate:
 * 2. the handler applied this sequence or a later one for the aggregate → `stale` (recorded
 *    skipped_stale);
 * 3. an older event of the aggregate is failed or parked → `parked` (recorded);
 * 4. an older one is processing or retrying, or a newer one is processing → `in_progress` (nothing
 *    changes; once the newer one is done this one is stale);
 * 5. else `claimed`, attempts + 1.
 * So at most one event per (handler, aggregate) is processing, and none is claimed after a newer
 * one was applied. An owner without a registry_owners row (never started) is not known gone.
 */
export type ClaimOutcome = 'claimed' | 'duplicate' | 'stale' | 'in_progress' | 'failed' | 'parked'

export type ClaimInput = {
  readonly eventId: string
  readonly aggregateType: string
  readonly aggregateId: string
  readonly seq: number
}

/** An event to mark done with the handler's result (recorded as JSON; omitted: none). */
export type DoneInput = {
  readonly eventId: string
  readonly result?: unknown
}

export type RegistryRow = {
  readonly handler: string
  readonly eventId: string
  readonly aggregateType: string
  readonly aggregateId: string
  readonly seq: number
  readonly status: string
  readonly owner: string | null
  readonly attempts: number
  readonly lastError: string | null
  readonly result: unknown
  readonly updatedAt: string
  /** The operator who last retried or skipped it, and when (null: never by hand). */
  readonly resolvedBy: string | null
  readonly resolvedAt: string | null
}

export type RegistryOptions = {
  readonly sql: Sql
  readonly schema: string
  /** This process's member name (stable across restarts, e.g. `projection-1`). */
  readonly member: string
  /** `PROCESSED_EVENT_LEASE_TIMEOUT_SECONDS` in ms (default 900,000). */
  readonly leaseMs?: number
  /** An owner without a heartbeat for this long is gone (default 3 × the owner heartbeat, 30 s). */
  readonly ownerTimeoutMs?: number
}

export type ProcessedEventRegistry = {
  /** `<member>/<instance>`: unique to this process. */
  readonly owner: string
  /** Registers this owner; earlier instances of the same member are marked stopped (C2). */
  start(): Promise<void>
  /** Keeps this owner alive (call well within `ownerTimeoutMs`). */
  touch(): Promise<void>
  /** Marks this owner stopped: its open claims can be taken at once. */
  stop(): Promise<void>
  /**
   * Claims a batch (C3, C4). In `tx` when given: the claims are seen by others only once it
   * commits (they wait on the aggregates' locks meanwhile), and vanish if it rolls back, so a
   * transactional handler claims, applies and marks done in one transaction.
   */
  claim(
    handler: string,
    events: readonly ClaimInput[],
    tx?: SqlQueryable,
  ): Promise<Map<string, ClaimOutcome>>
  /**
   * Claims a batch in `tx`, the transaction that will apply it, by the same rules and with the
   * same outcomes. The common case (an aggregate with no open row) writes no row yet: those
   * claimed events are `deferred`, and `recordDone` in the same transaction records them done
   * once applied (one row each instead of a claim and its update). The others are claims as
   * `claim` makes them, marked done by `markDone`. The aggregates' locks are held until `tx` ends.
   */
  claimInTransaction(
    handler: string,
    events: readonly ClaimInput[],
    tx: SqlQueryable,
  ): Promise<{ outcomes: Map<string, ClaimOutcome>; deferred: Set<string> }>
  /**
   * Records deferred claims (`claimInTransaction`) done, in the same transaction, with their
   * results, and moves the aggregates' versions up. Returns the ids it recorded.
   */
  recordDone(
    handler: string,
    events: readonly (ClaimInput & { readonly result?: unknown })[],
    tx: SqlQueryable,
  ): Promise<Set<string>>
  /** Extends the leases of claims this owner holds; returns the ids still held. */
  heartbeat(handler: string, eventIds: readonly string[]): Promise<Set<string>>
  /**
   * Marks claims of this owner done and moves the aggregates' versions up, in one statement, in
   * `tx` when given (so a projection's writes commit with it). An event given as `{ eventId,
   * result }` records its own result; one given by id records `result`. Returns the ids it
   * marked; an id missing from the result was not ours any more (its effect must not be
   * committed: throw to roll back).
   */
  markDone(
    handler: string,
    events: readonly (string | DoneInput)[],
    tx?: SqlQueryable,
    result?: unknown,
  ): Promise<Set<string>>
  /** Retryable: released for a retry; terminal: `failed` (dead-lettered). Owner-scoped. */
  markFailed(handler: string, eventId: string, error: string, retryable: boolean): Promise<void>
  /**
   * Parks a claim of this owner (it waits for an operator; later events of its aggregate park
   * behind it). Returns false when the claim was not this owner's any more.
   */
  park(handler: string, eventId: string, reason: string): Promise<boolean>
  /**
   * Claims events released for a retry (by an operator or a retryable failure) by the claim
   * rules: the oldest released event of up to `limit` aggregates, each only if nothing older of
   * its aggregate is open. Sequence order.
   */
  claimRetries(handler: string, limit: number): Promise<RegistryRow[]>
  listParked(handler?: string): Promise<RegistryRow[]>
  /**
   * Operator: failed or parked events become claimable again (by `claimRetries`); `actor` and
   * the time are recorded. Returns how many were failed or parked.
   */
  retryParked(handler: string, eventIds: readonly string[], actor: string): Promise<number>
  /** Operator: failed or parked events are skipped; later events of the aggregate flow. */
  skipParked(handler: string, eventIds: readonly string[], actor: string): Promise<number>
  /** Every handler's record of one event (command status). */
  status(eventId: string): Promise<RegistryRow[]>
}

const unavailable = (error: unknown): CairnError =>
  new CairnError(
    ErrorCode.REGISTRY_UNAVAILABLE,
    `processed-event registry: ${(error as Error).message}`,
    {
      retryable: true,
      cause: error,
    },
  )

type RawRow = {
  handler: string
  event_id: string
  aggregate_type: string
  aggregate_id: string
  sequence_number: string | number
  status: string
  owner: string | null
  attempts: number
  last_error: string | null
  result: unknown
  updated_at: string | Date
  resolved_by: string | null
  resolved_at: string | Date | null
}

const RETRYABLE_SQLSTATES = new Set(['40001', '40P01'])

const toRow = (r: RawRow): RegistryRow => ({
  handler: r.handler,
  eventId: r.event_id,
  aggregateType: r.aggregate_type,
  aggregateId: r.aggregate_id,
  seq: Number(r.sequence_number),
  status: r.status,
  owner: r.owner,
  attempts: Number(r.attempts),
  lastError: r.last_error,
  result: r.result,
  updatedAt: r.updated_at instanceof Date ? r.updated_at.toISOString() : String(r.updated_at),
  resolvedBy: r.resolved_by,
  resolvedAt:
    r.resolved_at === null
      ? null
      : r.resolved_at instanceof Date
        ? r.resolved_at.toISOString()
        : String(r.resolved_at),
})

/** Results by event id, one JSON object for the statement: an id without an entry records NULL. */
const resultsById = (events: readonly DoneInput[]): Record<string, unknown> => {
  const results = Object.create(null) as Record<string, unknown>
  for (const e of events) if (e.result !== undefined) results[e.eventId] = e.result
  return results
}

const COLUMNS =
  'handler, event_id, aggregate_type, aggregate_id, sequence_number, status, owner, attempts, last_error, result, updated_at, resolved_by, resolved_at'

export const createProcessedEventRegistry = (options: RegistryOptions): ProcessedEventRegistry => {
  const { sql, schema } = options
  const leaseMs = options.leaseMs ?? 900_000
  const ownerTimeoutMs = options.ownerTimeoutMs ?? 30_000
  if (!(leaseMs > 0) || !(ownerTimeoutMs > 0)) {
    throw new CairnError(
      ErrorCode.INVALID_CONFIG,
      'registry lease and owner timeout must be positive',
    )
  }
  if (options.member.includes('/')) {
    throw new CairnError(
      ErrorCode.INVALID_CONFIG,
      `registry member name must not contain '/': ${options.member}`,
    )
  }
  const owner = `${options.member}/${randomBytes(6).toString('hex')}`
  // A deadlock or serialization failure is retried, except in the caller's transaction (aborted).
  const q = async <R extends Record<string, unknown>>(
    text: string,
    params: readonly unknown[] = [],
    on: SqlQueryable = sql,
  ) => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await on.query<R>(text, params)
      } catch (error) {
        const code = (error as { code?: unknown }).code
        const retry = on === sql && attempt < 5 && typeof code === 'string'
        if (retry && RETRYABLE_SQLSTATES.has(code)) continue
        throw unavailable(error)
      }
    }
  }

  /** `events`: ClaimInputs, or their JSON as claim_events takes it. */
  /**
   * The CTE that moves the aggregates' versions up to the highest sequence among the rows of the
   * CTE `done` (handler `$1`); shared by `markDone` and `recordDone`.
   */
  const movedVersions = `versions AS (
           INSERT INTO ${schema}.aggregate_versions AS v (handler, aggregate_type, aggregate_id, last_sequence)
           SELECT $1, aggregate_type, aggregate_id, max(sequence_number) FROM done
            GROUP BY aggregate_type, aggregate_id
           ON CONFLICT (handler, aggregate_type, aggregate_id)
           DO UPDATE SET last_sequence = EXCLUDED.last_sequence, updated_at = now()
            WHERE v.last_sequence < EXCLUDED.last_sequence
         )`

  /** Events as the four parallel arrays ($n::text[] × 3, bigint[]) the batch statements unnest. */
  const columnsOf = (events: readonly ClaimInput[]) => [
    events.map((e) => e.eventId),
    events.map((e) => e.aggregateType),
    events.map((e) => e.aggregateId),
    events.map((e) => e.seq),
  ]

  const claimEvents = async (
    handler: string,
    events: readonly ClaimInput[] | string,
    tx?: SqlQueryable,
  ) => {
    const payload =
      typeof events === 'string'
        ? events
        : JSON.stringify(
            events.map((e) => ({
              event_id: e.eventId,
              aggregate_type: e.aggregateType,
              aggregate_id: e.aggregateId,
              seq: e.seq,
            })),
          )
    const rows = await q<{ result: unknown }>(
      `SELECT ${schema}.claim_events($1, $2, $3::jsonb, $4, $5) AS result`,
      [handler, owner, payload, leaseMs, ownerTimeoutMs],
      tx,
    )
    const raw = rows[0]?.result
    return (typeof raw === 'string' ? JSON.parse(raw) : raw) as {
      event_id: string
      outcome: ClaimOutcome
      deferred?: boolean
    }[]
  }

  /** Operator's decision on failed or parked events: retry them, or skip them. */
  const resolveParked = async (
    handler: string,
    eventIds: readonly string[],
    status: 'retrying' | 'skipped',
    actor: string,
  ): Promise<number> => {
    const rows = await q(
      `UPDATE ${schema}.processed_events
          SET status = $3, owner = NULL, updated_at = now(), resolved_by = $4, resolved_at = now()
        WHERE handler = $1 AND event_id = ANY ($2::text[]) AND status IN ('failed', 'parked')
        RETURNING event_id`,
      [handler, eventIds, status, actor.slice(0, 200)],
    )
    return rows.length
  }

  return {
    owner,
    async start() {
      await q(
        `UPDATE ${schema}.registry_owners SET stopped_at = now() WHERE member = $1 AND stopped_at IS NULL AND owner <> $2`,
        [options.member, owner],
      )
      await q(
        `INSERT INTO ${schema}.registry_owners (owner, member) VALUES ($1, $2)
         ON CONFLICT (owner) DO UPDATE SET heartbeat_at = now(), stopped_at = NULL`,
        [owner, options.member],
      )
    },
    async touch() {
      await q(`UPDATE ${schema}.registry_owners SET heartbeat_at = now() WHERE owner = $1`, [owner])
    },
    async stop() {
      await q(`UPDATE ${schema}.registry_owners SET stopped_at = now() WHERE owner = $1`, [owner])
    },
    async claim(handler, events, tx) {
      const out = new Map<string, ClaimOutcome>()
      if (events.length === 0) return out
      for (const r of await claimEvents(handler, events, tx)) out.set(r.event_id, r.outcome)
      return out
    },
    async claimInTransaction(handler, events, tx) {
      const outcomes = new Map<string, ClaimOutcome>()
      const deferred = new Set<string>()
      if (events.length === 0) return { outcomes, deferred }
      // Arrays in and out: cheaper for PostgreSQL than a JSON document per batch.
      const rows = await q<{
        event_ids: string[] | null
        outcomes: ClaimOutcome[] | null
        deferred: boolean[] | null
      }>(
        `SELECT event_ids, outcomes, deferred
           FROM ${schema}.claim_batch_in_tx($1, $2, $3::text[], $4::text[], $5::text[], $6::bigint[], $7, $8)`,
        [handler, owner, ...columnsOf(events), leaseMs, ownerTimeoutMs],
        tx,
      )
      const { event_ids: ids, outcomes: outs, deferred: later } = rows[0] ?? {}
      for (const [i, id] of (ids ?? []).entries()) {
        outcomes.set(id, outs?.[i] as ClaimOutcome)
        if (later?.[i] === true) deferred.add(id)
      }
      return { outcomes, deferred }
    },
    async recordDone(handler, events, tx) {
      if (events.length === 0) return new Set()
      const rows = await q<{ event_id: string }>(
        `WITH ev AS (
           SELECT * FROM unnest($3::text[], $4::text[], $5::text[], $6::bigint[])
                    AS e(event_id, aggregate_type, aggregate_id, seq)
         ), done AS (
           INSERT INTO ${schema}.processed_events
                  (handler, event_id, aggregate_type, aggregate_id, sequence_number, status, owner,
                   attempts, result)
           SELECT $1, event_id, aggregate_type, aggregate_id, seq, 'done', $2, 1,
                  $7::jsonb -> event_id
             FROM ev
           RETURNING event_id, aggregate_type, aggregate_id, sequence_number
         ), ${movedVersions}
         SELECT event_id FROM done`,
        [handler, owner, ...columnsOf(events), JSON.stringify(resultsById(events))],
        tx,
      )
      return new Set(rows.map((r) => r.event_id))
    },
    async heartbeat(handler, eventIds) {
      if (eventIds.length === 0) return new Set()
      const rows = await q<{ event_id: string }>(
        `UPDATE ${schema}.processed_events
            SET lease_until = now() + make_interval(secs => $4::double precision / 1000), heartbeat_at = now()
          WHERE handler = $1 AND event_id = ANY ($2::text[]) AND owner = $3 AND status = 'processing'
          RETURNING event_id`,
        [handler, eventIds, owner, leaseMs],
      )
      return new Set(rows.map((r) => r.event_id))
    },
    async markDone(handler, events, tx, result) {
      if (events.length === 0) return new Set()
      const eventIds = events.map((e) => (typeof e === 'string' ? e : e.eventId))
      const results = resultsById(
        events.map((e) => (typeof e === 'string' ? { eventId: e, result } : e)),
      )
      const rows = await q<{ event_id: string }>(
        `WITH done AS (
           UPDATE ${schema}.processed_events
              SET status = 'done', result = $4::jsonb -> processed_events.event_id,
                  lease_until = NULL, updated_at = now()
            WHERE handler = $1 AND event_id = ANY ($2::text[]) AND owner = $3 AND status = 'processing'
              -- Never applied after a newer one (claim_events keeps it so).
              AND NOT EXISTS (
                SELECT 1 FROM ${schema}.aggregate_versions v
                 WHERE v.handler = $1 AND v.aggregate_type = processed_events.aggregate_type
                   AND v.aggregate_id = processed_events.aggregate_id
                   AND v.last_sequence >= processed_events.sequence_number)
            RETURNING event_id, aggregate_type, aggregate_id, sequence_number
         ), ${movedVersions}
         SELECT event_id FROM done`,
        [handler, eventIds, owner, JSON.stringify(results)],
        tx,
      )
      return new Set(rows.map((r) => r.event_id))
    },
    async markFailed(handler, eventId, error, retryable) {
      await q(
        `UPDATE ${schema}.processed_events
            SET status = $4, last_error = $5, lease_until = NULL, updated_at = now()
          WHERE handler = $1 AND event_id = $2 AND owner = $3 AND status = 'processing'`,
        [handler, eventId, owner, retryable ? 'retrying' : 'failed', error.slice(0, 4000)],
      )
    },
    async park(handler, eventId, reason) {
      const rows = await q(
        `UPDATE ${schema}.processed_events
            SET status = 'parked', last_error = $4, owner = NULL, lease_until = NULL, updated_at = now()
          WHERE handler = $1 AND event_id = $2 AND owner = $3 AND status = 'processing'
          RETURNING event_id`,
        [handler, eventId, owner, reason.slice(0, 4000)],
      )
      return rows.length > 0
    },
    async claimRetries(handler, limit) {
      const candidates = await q<{ payload: unknown }>(
        `SELECT coalesce(jsonb_agg(jsonb_build_object('event_id', event_id,
                  'aggregate_type', aggregate_type, 'aggregate_id', aggregate_id, 'seq', sequence_number)),
                  '[]'::jsonb) AS payload
           FROM (SELECT DISTINCT ON (aggregate_type, aggregate_id) * FROM ${schema}.processed_events
                  WHERE handler = $1 AND status = 'retrying'
                  ORDER BY aggregate_type, aggregate_id, sequence_number LIMIT $2) AS next`,
        [handler, limit],
      )
      const payload = candidates[0]?.payload
      const text = typeof payload === 'string' ? payload : JSON.stringify(payload ?? [])
      if (text === '[]') return []
      const claimed = (await claimEvents(handler, text))
        .filter((r) => r.outcome === 'claimed')
        .map((r) => r.event_id)
      if (claimed.length === 0) return []
      const rows = await q<RawRow>(
        `SELECT ${COLUMNS} FROM ${schema}.processed_events
          WHERE handler = $1 AND event_id = ANY ($2::text[]) AND owner = $3 AND status = 'processing'`,
        [handler, claimed, owner],
      )
      return rows.map(toRow).sort((a, b) => a.seq - b.seq)
    },
    async listParked(handler) {
      const rows = await q<RawRow>(
        `SELECT ${COLUMNS} FROM ${schema}.processed_events
          WHERE status IN ('failed', 'parked') AND ($1::text IS NULL OR handler = $1)
          ORDER BY handler, aggregate_type, aggregate_id, sequence_number`,
        [handler ?? null],
      )
      return rows.map(toRow)
    },
    retryParked: (handler, eventIds, actor) => resolveParked(handler, eventIds, 'retrying', actor),
    skipParked: (handler, eventIds, actor) => resolveParked(handler, eventIds, 'skipped', actor),
    async status(eventId) {
      // No index leads with event_id (004 dropped it: one entry less per claim and completion):
      // walk the distinct handlers on the primary key, then one probe per handler.
      const rows = await q<RawRow>(
        `WITH RECURSIVE handlers (handler) AS (
           SELECT min(handler) FROM ${schema}.processed_events
           UNION ALL
           SELECT (SELECT min(p.handler) FROM ${schema}.processed_events p WHERE p.handler > h.handler)
             FROM handlers h WHERE h.handler IS NOT NULL
         )
         SELECT r.* FROM handlers h
          CROSS JOIN LATERAL (
            -- LIMIT keeps it a probe per handler (the planner would flatten a plain subquery).
            SELECT ${COLUMNS} FROM ${schema}.processed_events p
             WHERE p.handler = h.handler AND p.event_id = $1 LIMIT 1) AS r
          ORDER BY r.handler`,
        [eventId],
      )
      return rows.map(toRow)
    },
  }
}
