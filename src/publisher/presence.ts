import type { SqlQueryable } from '../core/ports/sql.ts'
import type { PublisherPresence } from './publisher.ts'

/**
 * Where each running publisher stands, in PostgreSQL (migrations/006_publishers.sql): the
 * checkpoint in the bucket names the active publisher only, this shows the standbys too. Each
 * publisher upserts its row about every heartbeat; rows not refreshed for a day are removed by the
 * next publisher that starts.
 */
export const presenceRecorder = (
  sql: SqlQueryable,
  schema: string,
  host: string,
): ((state: PublisherPresence) => Promise<void>) => {
  let pruned = false
  return async (state) => {
    if (!pruned) {
      await sql.query(`DELETE FROM ${schema}.publishers WHERE seen_at < now() - interval '1 day'`)
      pruned = true
    }
    await sql.query(
      `INSERT INTO ${schema}.publishers AS t (id, role, position, host, seen_at)
       VALUES ($1, $2, $3, $4, now())
       ON CONFLICT (id) DO UPDATE
         SET role = EXCLUDED.role, position = EXCLUDED.position, host = EXCLUDED.host,
             seen_at = now()`,
      [state.id, state.role, state.position, host],
    )
  }
}

/** A publisher as the operator's view shows it. */
export type PublisherSeen = {
  readonly id: string
  readonly role: string
  readonly position: string | null
  readonly host: string
  /** Seconds since it last said where it stands (a heartbeat is 5 s; far more: it is gone). */
  readonly seen_seconds_ago: number
}

/** The publishers heard from in the last `withinSeconds` (default 10 minutes), active first. */
export const listPublishers = async (
  sql: SqlQueryable,
  schema: string,
  withinSeconds = 600,
): Promise<PublisherSeen[]> => {
  const rows = await sql.query<{
    id: string
    role: string
    position: string | null
    host: string
    age: string | number
  }>(
    `SELECT id, role, position, host, extract(epoch FROM now() - seen_at) AS age
       FROM ${schema}.publishers
      WHERE seen_at > now() - make_interval(secs => $1::float8)
      ORDER BY (role = 'active') DESC, seen_at DESC, id`,
    [withinSeconds],
  )
  return rows.map((r) => ({
    id: r.id,
    role: r.role,
    position: r.position,
    host: r.host,
    seen_seconds_ago: Math.max(0, Math.round(Number(r.age))),
  }))
}
