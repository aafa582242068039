import { CairnError, ErrorCode } from '../core/errors.ts'
import type { StoredEnvelope } from '../core/envelope.ts'
import type { Sql } from '../core/ports/sql.ts'
import type { EventStore } from '../event-store/event-store.ts'
import type { ProcessedEventRegistry } from '../registry/processed-events.ts'
import { AGGREGATE, HANDLERS } from './model.ts'
import { createProjectionHandler } from './projection.ts'

export type RebuildOptions = {
  readonly eventStore: EventStore
  readonly sql: Sql
  readonly schema: string
  /** A registry of this process (member e.g. `operator`), started. */
  readonly registry: ProcessedEventRegistry
  /** Events per transaction (default 500). */
  readonly batchSize?: number
  readonly onProgress?: (applied: number) => void
}

const PROJECTED: ReadonlySet<string> = new Set(Object.values(AGGREGATE))

/**
 * Rebuilds the read model from the bucket alone: empties it and the projection's registry
 * records, then applies every domain event stored so far, in stored order (per aggregate that is
 * sequence order), through the projection handler — claimed and marked done in the registry in
 * the same transaction, batch by batch, so the projection worker started afterwards treats them
 * as duplicates and takes over from the first event it has not seen. The projection worker must
 * be stopped meanwhile: a claim of it that is still live is refused.
 */
export const rebuildProjection = async (options: RebuildOptions): Promise<number> => {
  const { eventStore, sql, schema, registry } = options
  const handler = HANDLERS.projection
  const batchSize = options.batchSize ?? 500
  const live = await sql.query<{ n: string }>(
    `SELECT count(*) AS n FROM ${schema}.processed_events
      WHERE handler = $1 AND status = 'processing' AND lease_until > now()`,
    [handler],
  )
  if (Number(live[0]?.n ?? 0) > 0) {
    throw new CairnError(
      ErrorCode.INVALID_CONFIG,
      'a projection worker is running (it holds live claims): stop it before rebuilding',
    )
  }
  await sql.transaction(async (tx) => {
    await tx.query(`DELETE FROM ${schema}.rm_instances`)
    await tx.query(`DELETE FROM ${schema}.rm_classes`)
    await tx.query(`DELETE FROM ${schema}.rm_databases`)
    await tx.query(`DELETE FROM ${schema}.processed_events WHERE handler = $1`, [handler])
    await tx.query(`DELETE FROM ${schema}.aggregate_versions WHERE handler = $1`, [handler])
  })
  const project = createProjectionHandler({ schema })
  const signal = new AbortController().signal
  let applied = 0
  const apply = async (batch: StoredEnvelope[]): Promise<void> => {
    const outcomes = await registry.claim(
      handler,
      batch.map((e) => ({
        eventId: e.event_id,
        aggregateType: e.aggregate_type,
        aggregateId: e.aggregate_id,
        seq: e.sequence_number,
      })),
    )
    // One event per aggregate per claim round: the rest of an aggregate waits for the next round.
    const claimed = batch.filter((e) => outcomes.get(e.event_id) === 'claimed')
    const waiting = batch.filter((e) => outcomes.get(e.event_id) === 'in_progress')
    await sql.transaction(async (tx) => {
      const done = []
      for (const e of claimed) {
        done.push({ eventId: e.event_id, result: await project(e, { tx, attempt: 1, signal }) })
      }
      const marked = await registry.markDone(handler, done, tx)
      if (marked.size !== claimed.length) {
        throw new CairnError(ErrorCode.APPEND_FAILED, 'a claim was taken over during the rebuild')
      }
    })
    applied += claimed.length
    options.onProgress?.(applied)
    if (waiting.length > 0) await apply(waiting)
  }
  let batch: StoredEnvelope[] = []
  // To the end of the index, not to this host's "now": its clock may be behind the database's,
  // which stamps the keys, and the newest events would be left out.
  for await (const e of eventStore.readByDate(0, Number.POSITIVE_INFINITY)) {
    if (e.metadata.kind !== 'domain' || !PROJECTED.has(e.aggregate_type)) continue
    batch.push(e)
    if (batch.length >= batchSize) {
      await apply(batch)
      batch = []
    }
  }
  if (batch.length > 0) await apply(batch)
  return applied
}
