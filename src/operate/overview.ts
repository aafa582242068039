import type { ObjectStore } from '../core/ports/object-store.ts'
import type { SqlQueryable } from '../core/ports/sql.ts'
import { loadCheckpoint } from '../publisher/checkpoint.ts'
import { lagSeconds, unpublishedSegments } from '../publisher/lag.ts'
import { listPublishers } from '../publisher/presence.ts'
import type { PublisherSeen } from '../publisher/presence.ts'
import { listQuarantine } from '../publisher/publisher.ts'

/**
 * The pipeline at a glance, as `cairn status` prints it and the console shows it: the publisher's
 * checkpoint and lag, the registry's records per handler and status, stuck leases, quarantine,
 * and consumer lag per topic where the bus can tell. One query for both, so they cannot disagree.
 */

/** The statuses of the registry, in the order an operator reads them. */
export const REGISTRY_STATUSES = [
  'done',
  'processing',
  'retrying',
  'failed',
  'parked',
  'skipped',
  'skipped_stale',
] as const

/** One topic's consumer lag in a group: messages not yet committed, summed over partitions. */
export type TopicLag = { readonly group: string; readonly topic: string; readonly lag: number }

export type PublisherOverview = {
  /** The last segment key published (null before the first). */
  readonly checkpoint: string | null
  readonly settled_up_to: string | null
  /** Age of the oldest unpublished segment, on the database's clock; 0 when caught up. */
  readonly lag_seconds: number
  /**
   * Segments (commits of one or more events) stored after the checkpoint, counted up to
   * UNPUBLISHED_COUNT_CAP of src/publisher/lag.ts (`capped` then).
   */
  readonly unpublished_segments: number
  readonly unpublished_capped: boolean
  /** The active publisher: the owner of the checkpoint. */
  readonly owner: string | null
  readonly updated_at: string | null
  readonly settling: boolean | null
  readonly not_settling_because?: string | null
  readonly clock_offset_ms: number | null
  readonly quarantined: number
  /** The publisher running in this process, if one does: its role (active or standby). */
  readonly this_process: string | null
  /** Every publisher heard from in the last 10 minutes (active and standbys), active first. */
  readonly publishers: readonly PublisherSeen[]
}

export type PipelineOverview = {
  /** When it was taken, on the database's clock. */
  readonly at: string
  readonly publisher: PublisherOverview
  /** Per handler, records per status, and `lease_expired`: processing past its lease. */
  readonly handlers: Readonly<Record<string, Readonly<Record<string, number>>>>
  /** Per group and topic; `unknown` where the bus cannot tell. */
  readonly consumers: readonly TopicLag[] | 'unknown'
}

export type OverviewSources = {
  readonly objectStore: ObjectStore
  readonly sql: SqlQueryable
  readonly schema: string
  /** The database's clock in µs (it stamps the keys; lag is measured on it). */
  readonly nowUs: () => Promise<number>
  /** The role of the publisher in this process, when one runs here. */
  readonly localPublisherRole?: () => string
  /** Consumer lag per topic, when the bus can tell. */
  readonly consumerLag?: () => Promise<readonly TopicLag[] | 'unknown'>
}

export const pipelineOverview = async (sources: OverviewSources): Promise<PipelineOverview> => {
  const { sql, schema } = sources
  const { checkpoint } = await loadCheckpoint(sources.objectStore)
  const [counts, stuck, pending, quarantine, nowUs, consumers, publishers] = await Promise.all([
    sql.query<{ handler: string; status: string; n: string | number }>(
      `SELECT handler, status, count(*) AS n FROM ${schema}.processed_events
        GROUP BY handler, status ORDER BY handler, status`,
    ),
    sql.query<{ handler: string; n: string | number }>(
      `SELECT handler, count(*) AS n FROM ${schema}.processed_events
        WHERE status = 'processing' AND lease_until < now() GROUP BY handler ORDER BY handler`,
    ),
    unpublishedSegments(sources.objectStore, checkpoint?.last_index_key ?? null),
    listQuarantine(sources.objectStore),
    sources.nowUs(),
    sources.consumerLag?.() ?? Promise.resolve('unknown' as const),
    listPublishers(sql, schema),
  ])
  const handlers: Record<string, Record<string, number>> = {}
  for (const c of counts) (handlers[c.handler] ??= {})[c.status] = Number(c.n)
  for (const s of stuck) (handlers[s.handler] ??= {})['lease_expired'] = Number(s.n)
  const clock = checkpoint?.key_clock
  return {
    at: new Date(Math.floor(nowUs / 1000)).toISOString(),
    publisher: {
      checkpoint: checkpoint?.last_index_key ?? null,
      settled_up_to:
        checkpoint === null ? null : new Date(checkpoint.last_timestamp_ms).toISOString(),
      lag_seconds: lagSeconds(pending.oldestUs, nowUs),
      unpublished_segments: pending.count,
      unpublished_capped: pending.capped,
      owner: checkpoint?.owner ?? null,
      updated_at: checkpoint?.updated_at ?? null,
      settling: clock?.settling ?? null,
      ...(clock?.settling === false ? { not_settling_because: clock.reason } : {}),
      clock_offset_ms: clock?.offset_ms ?? null,
      quarantined: quarantine.length,
      this_process: sources.localPublisherRole?.() ?? null,
      publishers,
    },
    handlers,
    consumers,
  }
}
