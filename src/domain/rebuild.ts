import type { Sql } from '../core/ports/sql.ts'
import type { EventStore } from '../event-store/event-store.ts'
import type { ProcessedEventRegistry } from '../registry/processed-events.ts'
import { replayIntoHandler } from '../registry/replay.ts'
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
  const { schema } = options
  const project = createProjectionHandler({ schema })
  const signal = new AbortController().signal
  return replayIntoHandler({
    sql: options.sql,
    schema,
    registry: options.registry,
    handler: HANDLERS.projection,
    reset: async (tx) => {
      await tx.query(`DELETE FROM ${schema}.rm_instances`)
      await tx.query(`DELETE FROM ${schema}.rm_classes`)
      await tx.query(`DELETE FROM ${schema}.rm_databases`)
    },
    // To the end of the index, not to this host's "now": its clock may be behind the database's,
    // which stamps the keys, and the newest events would be left out.
    events: options.eventStore.readByDate(0, Number.POSITIVE_INFINITY),
    takes: (e) => e.metadata.kind === 'domain' && PROJECTED.has(e.aggregate_type),
    apply: async (batch, tx) => {
      const results = []
      for (const e of batch) results.push(await project(e, { tx, attempt: 1, signal }))
      return results
    },
    ...(options.batchSize === undefined ? {} : { batchSize: options.batchSize }),
    ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
  })
}
