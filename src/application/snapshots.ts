import type { SqlQueryable } from '../core/ports/sql.ts'

/**
 * Snapshots of aggregate states in PostgreSQL (migrations/004_snapshots.sql): derived data that
 * spares folding a long stream from its start. A snapshot is only ever a shortcut to a state the
 * stream gives too: it carries the sequence it was taken at and the `evolve` version that made
 * it, and one of another version is ignored. Saving never goes backwards (a slower writer with an
 * older state does not replace a newer snapshot).
 */
export type Snapshot = { readonly seq: number; readonly state: unknown }

export type SnapshotStore = {
  load(aggregateType: string, aggregateId: string, version: number): Promise<Snapshot | null>
  save(
    aggregateType: string,
    aggregateId: string,
    version: number,
    snapshot: Snapshot,
  ): Promise<void>
  /** Removes an aggregate type's snapshots (all when omitted); returns how many. */
  clear(aggregateType?: string): Promise<number>
}

export const createSnapshotStore = (sql: SqlQueryable, schema: string): SnapshotStore => {
  const table = `${schema}.snapshots`
  return {
    async load(aggregateType, aggregateId, version) {
      // As text, parsed here: a driver's own jsonb decoding would hand back a state that is a
      // JSON string as a bare string, indistinguishable from the encoded form.
      const rows = await sql.query<{ seq: string | number; state: string }>(
        `SELECT seq, state::text AS state FROM ${table}
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND version = $3`,
        [aggregateType, aggregateId, version],
      )
      const row = rows[0]
      if (row === undefined) return null
      return { seq: Number(row.seq), state: JSON.parse(row.state) as unknown }
    },
    async save(aggregateType, aggregateId, version, snapshot) {
      await sql.query(
        `INSERT INTO ${table} AS t (aggregate_type, aggregate_id, version, seq, state)
         VALUES ($1, $2, $3, $4, $5::jsonb)
         ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
           SET version = EXCLUDED.version, seq = EXCLUDED.seq, state = EXCLUDED.state,
               taken_at = now()
         WHERE t.version <> EXCLUDED.version OR t.seq < EXCLUDED.seq`,
        [aggregateType, aggregateId, version, snapshot.seq, JSON.stringify(snapshot.state)],
      )
    },
    async clear(aggregateType) {
      const rows =
        aggregateType === undefined
          ? await sql.query(`DELETE FROM ${table} RETURNING 1`)
          : await sql.query(`DELETE FROM ${table} WHERE aggregate_type = $1 RETURNING 1`, [
              aggregateType,
            ])
      return rows.length
    },
  }
}
