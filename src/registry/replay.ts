import type { StoredEnvelope } from '../core/envelope.ts'
import { CairnError, ErrorCode } from '../core/errors.ts'
import type { Sql, SqlQueryable } from '../core/ports/sql.ts'
import type { ProcessedEventRegistry } from './processed-events.ts'

export type ReplayOptions = {
  readonly sql: Sql
  readonly schema: string
  /** A registry of this process (member e.g. `operator-rebuild`), started. */
  readonly registry: ProcessedEventRegistry
  /** The handler whose records are rebuilt (a projection's). */
  readonly handler: string
  /** Empties what the handler built, in the transaction that drops its records. */
  readonly reset: (tx: SqlQueryable) => Promise<void>
  /** The stored events, in stored order (per aggregate, sequence order). */
  readonly events: AsyncIterable<StoredEnvelope>
  /** Whether the handler takes an event. */
  readonly takes: (event: StoredEnvelope) => boolean
  /** Applies a batch (at most one event per aggregate) in `tx`; one result per event. */
  readonly apply: (
    batch: readonly StoredEnvelope[],
    tx: SqlQueryable,
  ) => Promise<readonly unknown[]>
  /** Events per transaction (default 500). */
  readonly batchSize?: number
  readonly onProgress?: (applied: number) => void
}

/**
 * Rebuilds what a transactional handler (a projection) built, from the bucket alone: refuses while
 * the handler's worker holds live claims; empties it and the handler's registry records in one
 * transaction; then applies every stored event it takes, claimed and marked done in the registry
 * in the transaction that applies it, batch by batch — so the worker started afterwards treats
 * them as duplicates and takes over from the first event it has not seen. Returns how many
 * events it applied.
 */
export const replayIntoHandler = async (options: ReplayOptions): Promise<number> => {
  const { sql, schema, registry, handler } = options
  const batchSize = options.batchSize ?? 500
  const live = await sql.query<{ n: string }>(
    `SELECT count(*) AS n FROM ${schema}.processed_events
      WHERE handler = $1 AND status = 'processing' AND lease_until > now()`,
    [handler],
  )
  if (Number(live[0]?.n ?? 0) > 0) {
    throw new CairnError(
      ErrorCode.INVALID_CONFIG,
      `${handler}: its worker is running (it holds live claims): stop it before rebuilding`,
    )
  }
  await sql.transaction(async (tx) => {
    await options.reset(tx)
    await tx.query(`DELETE FROM ${schema}.processed_events WHERE handler = $1`, [handler])
    await tx.query(`DELETE FROM ${schema}.aggregate_versions WHERE handler = $1`, [handler])
  })
  let applied = 0
  const apply = async (batch: readonly StoredEnvelope[]): Promise<void> => {
    const outcomes = await registry.claim(
      handler,
      batch.map((e) => ({
        eventId: e.event_id,
        aggregateType: e.aggregate_type,
        aggregateId: e.aggregate_id,
        seq: e.sequence_number,
      })),
    )
    // One event per aggregate per claim round: the rest of an aggregate waits for the next one.
    const claimed = batch.filter((e) => outcomes.get(e.event_id) === 'claimed')
    const waiting = batch.filter((e) => outcomes.get(e.event_id) === 'in_progress')
    await sql.transaction(async (tx) => {
      const results = await options.apply(claimed, tx)
      const marked = await registry.markDone(
        handler,
        claimed.map((e, i) => ({ eventId: e.event_id, result: results[i] })),
        tx,
      )
      if (marked.size !== claimed.length) {
        throw new CairnError(ErrorCode.APPEND_FAILED, 'a claim was taken over during the rebuild')
      }
    })
    applied += claimed.length
    options.onProgress?.(applied)
    if (waiting.length > 0) await apply(waiting)
  }
  let batch: StoredEnvelope[] = []
  for await (const e of options.events) {
    if (!options.takes(e)) continue
    batch.push(e)
    if (batch.length >= batchSize) {
      await apply(batch)
      batch = []
    }
  }
  if (batch.length > 0) await apply(batch)
  return applied
}
