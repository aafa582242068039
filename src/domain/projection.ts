import type { StoredEnvelope } from '../core/envelope.ts'
import { CairnError, ErrorCode } from '../core/errors.ts'
import type { SqlQueryable } from '../core/ports/sql.ts'
import type { Handle, HandleBatch } from '../worker/worker.ts'
import { COMMAND_REJECTED } from './decide.ts'
import { AGGREGATE } from './model.ts'

/**
 * The projection of the domain events (ontology_events and instance_events) into the read model
 * of migrations/003_read_model.sql. Transactional: it writes only through the worker's
 * transaction, which commits with mark_done, so each event is applied exactly once. It is
 * idempotent all the same: a row only moves to a higher `seq`.
 */

export type ProjectionOptions = {
  /** The schema holding the read model (the registry's schema). */
  readonly schema: string
}

export type ProjectionResult = {
  readonly applied: string
  readonly rows: number
}

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/

const str = (v: unknown): string | null => (typeof v === 'string' ? v : null)
const int = (v: unknown): number => (Number.isSafeInteger(v) ? (v as number) : 0)

const required = (e: StoredEnvelope, field: string): string => {
  const v = e.data[field]
  if (typeof v !== 'string' || v === '') {
    throw new CairnError(
      ErrorCode.INVALID_ENVELOPE,
      `${e.event_type} ${e.event_id}: data.${field} must be a non-empty string`,
    )
  }
  return v
}

/** The projection's handler (one event) and its batch form (instance upserts in two statements). */
export const createProjection = (
  options: ProjectionOptions,
): { readonly handle: Handle; readonly handleBatch: HandleBatch } => {
  if (!SCHEMA_NAME.test(options.schema)) {
    throw new CairnError(
      ErrorCode.INVALID_CONFIG,
      `schema name ${JSON.stringify(options.schema)} must match ${SCHEMA_NAME.source}`,
    )
  }
  const s = options.schema
  const DB = `${s}.rm_databases`
  const CLS = `${s}.rm_classes`
  const INST = `${s}.rm_instances`

  const apply = async (tx: SqlQueryable, e: StoredEnvelope): Promise<number> => {
    const seq = e.sequence_number
    const at = e.occurred_at
    const d = e.data
    const count = async (text: string, params: readonly unknown[]): Promise<number> =>
      (await tx.query(`${text} RETURNING 1`, params)).length

    switch (e.event_type) {
      case 'DATABASE_CREATED':
        return count(
          `INSERT INTO ${DB} AS t (name, description, seq, generation, created_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $5)
           ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description, seq = EXCLUDED.seq,
             generation = EXCLUDED.generation, created_at = EXCLUDED.created_at,
             updated_at = EXCLUDED.updated_at
           WHERE t.seq < EXCLUDED.seq`,
          [e.aggregate_id, str(d.description), seq, int(d.generation) || seq, at],
        )
      case 'DATABASE_DELETED': {
        const db = e.aggregate_id
        const generation = int(d.generation)
        // Children of this generation (or older) go with it; newer ones cannot exist yet.
        await tx.query(`DELETE FROM ${INST} WHERE db = $1 AND db_generation <= $2`, [
          db,
          generation,
        ])
        await tx.query(`DELETE FROM ${CLS} WHERE db = $1 AND db_generation <= $2`, [db, generation])
        return count(`DELETE FROM ${DB} WHERE name = $1 AND seq < $2`, [db, seq])
      }
      case 'ONTOLOGY_CLASS_CREATED':
      case 'ONTOLOGY_CLASS_UPDATED': {
        const created = e.event_type === 'ONTOLOGY_CLASS_CREATED'
        return count(
          `INSERT INTO ${CLS} AS t (db, id, label, description, properties, seq, generation,
             db_generation, created_at, updated_at)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $9)
           ON CONFLICT (db, id) DO UPDATE SET label = EXCLUDED.label,
             description = EXCLUDED.description, properties = EXCLUDED.properties,
             seq = EXCLUDED.seq, generation = EXCLUDED.generation,
             db_generation = EXCLUDED.db_generation,
             created_at = CASE WHEN $10::boolean THEN EXCLUDED.created_at ELSE t.created_at END,
             updated_at = EXCLUDED.updated_at
           WHERE t.seq < EXCLUDED.seq`,
          [
            required(e, 'db_name'),
            required(e, 'class_id'),
            str(d.label),
            str(d.description),
            JSON.stringify(Array.isArray(d.properties) ? d.properties : []),
            seq,
            int(d.generation),
            int(d.db_generation),
            at,
            created,
          ],
        )
      }
      case 'ONTOLOGY_CLASS_DELETED': {
        const db = required(e, 'db_name')
        const classId = required(e, 'class_id')
        await tx.query(
          `DELETE FROM ${INST} WHERE db = $1 AND class_id = $2 AND class_generation <= $3`,
          [db, classId, int(d.generation)],
        )
        return count(`DELETE FROM ${CLS} WHERE db = $1 AND id = $2 AND seq < $3`, [
          db,
          classId,
          seq,
        ])
      }
      case 'INSTANCE_CREATED':
      case 'INSTANCE_UPDATED': {
        const created = e.event_type === 'INSTANCE_CREATED'
        const data = typeof d.data === 'object' && d.data !== null ? d.data : {}
        return count(
          `INSERT INTO ${INST} AS t (db, class_id, id, data, seq, class_generation, db_generation,
             created_at, updated_at)
           VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $8)
           ON CONFLICT (db, class_id, id) DO UPDATE SET data = EXCLUDED.data, seq = EXCLUDED.seq,
             class_generation = EXCLUDED.class_generation, db_generation = EXCLUDED.db_generation,
             created_at = CASE WHEN $9::boolean THEN EXCLUDED.created_at ELSE t.created_at END,
             updated_at = EXCLUDED.updated_at
           WHERE t.seq < EXCLUDED.seq`,
          [
            required(e, 'db_name'),
            required(e, 'class_id'),
            required(e, 'instance_id'),
            JSON.stringify(data),
            seq,
            int(d.class_generation),
            int(d.db_generation),
            at,
            created,
          ],
        )
      }
      case 'INSTANCE_DELETED':
        return count(
          `DELETE FROM ${INST} WHERE db = $1 AND class_id = $2 AND id = $3 AND seq < $4`,
          [required(e, 'db_name'), required(e, 'class_id'), required(e, 'instance_id'), seq],
        )
      case COMMAND_REJECTED:
        // The aggregate moved on (its next expected_seq is this one) but its state did not.
        switch (e.aggregate_type) {
          case AGGREGATE.database:
            return count(`UPDATE ${DB} SET seq = $2 WHERE name = $1 AND seq < $2`, [
              e.aggregate_id,
              seq,
            ])
          case AGGREGATE.ontologyClass:
            return count(`UPDATE ${CLS} SET seq = $3 WHERE db = $1 AND id = $2 AND seq < $3`, [
              required(e, 'db_name'),
              required(e, 'class_id'),
              seq,
            ])
          case AGGREGATE.instance:
            return count(
              `UPDATE ${INST} SET seq = $4 WHERE db = $1 AND class_id = $2 AND id = $3 AND seq < $4`,
              [required(e, 'db_name'), required(e, 'class_id'), required(e, 'instance_id'), seq],
            )
          default:
            return 0
        }
      default:
        // Events of other domains sharing the topics are not ours to project.
        return 0
    }
  }

  const txOf = (ctx: { readonly tx: SqlQueryable | undefined }): SqlQueryable => {
    if (ctx.tx === undefined) {
      throw new CairnError(
        ErrorCode.INVALID_CONFIG,
        'the projection is transactional: run its worker with `transactional` set',
      )
    }
    return ctx.tx
  }
  const checkKind = (envelope: StoredEnvelope): void => {
    if (envelope.metadata.kind !== 'domain') {
      throw new CairnError(
        ErrorCode.INVALID_ENVELOPE,
        `the projection applies domain events only; ${envelope.event_id} is a ${String(envelope.metadata.kind)}`,
      )
    }
  }

  /**
   * The instances created (or updated) by a batch, in one statement: one row per event (the
   * worker gives at most one event per aggregate). Returns the keys of the rows it wrote.
   */
  const upsertInstances = async (
    tx: SqlQueryable,
    events: readonly StoredEnvelope[],
    created: boolean,
  ): Promise<Set<string>> => {
    if (events.length === 0) return new Set()
    const cols = {
      db: [] as string[],
      cls: [] as string[],
      id: [] as string[],
      data: [] as string[],
      seq: [] as number[],
      cg: [] as number[],
      dg: [] as number[],
      at: [] as string[],
    }
    for (const e of events) {
      const d = e.data
      cols.db.push(required(e, 'db_name'))
      cols.cls.push(required(e, 'class_id'))
      cols.id.push(required(e, 'instance_id'))
      cols.data.push(JSON.stringify(typeof d.data === 'object' && d.data !== null ? d.data : {}))
      cols.seq.push(e.sequence_number)
      cols.cg.push(int(d.class_generation))
      cols.dg.push(int(d.db_generation))
      cols.at.push(e.occurred_at)
    }
    const rows = await tx.query<{ db: string; class_id: string; id: string }>(
      `INSERT INTO ${INST} AS t (db, class_id, id, data, seq, class_generation, db_generation,
         created_at, updated_at)
       SELECT db, class_id, id, data, seq, cg, dg, at, at
         FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::bigint[], $6::bigint[],
                     $7::bigint[], $8::timestamptz[]) AS u(db, class_id, id, data, seq, cg, dg, at)
       ON CONFLICT (db, class_id, id) DO UPDATE SET data = EXCLUDED.data, seq = EXCLUDED.seq,
         class_generation = EXCLUDED.class_generation, db_generation = EXCLUDED.db_generation,
         created_at = ${created ? 'EXCLUDED.created_at' : 't.created_at'},
         updated_at = EXCLUDED.updated_at
       WHERE t.seq < EXCLUDED.seq
       RETURNING db, class_id, id`,
      [cols.db, cols.cls, cols.id, cols.data, cols.seq, cols.cg, cols.dg, cols.at],
    )
    return new Set(rows.map((r) => `${r.db}\u0000${r.class_id}\u0000${r.id}`))
  }

  const handle: Handle = async (envelope, ctx): Promise<ProjectionResult> => {
    const tx = txOf(ctx)
    checkKind(envelope)
    const rows = await apply(tx, envelope)
    return { applied: envelope.event_type, rows }
  }

  /**
   * A batch: its instance creations and updates in one statement each, then the other events one
   * by one in the order given. Events of different aggregates commute here: deletions remove
   * only rows of their generation or older, and reads join the live generations.
   */
  const handleBatch: HandleBatch = async (envelopes, ctx) => {
    const tx = txOf(ctx)
    envelopes.forEach(checkKind)
    const creates = envelopes.filter((e) => e.event_type === 'INSTANCE_CREATED')
    const updates = envelopes.filter((e) => e.event_type === 'INSTANCE_UPDATED')
    const written = new Set([
      ...(await upsertInstances(tx, creates, true)),
      ...(await upsertInstances(tx, updates, false)),
    ])
    const results: ProjectionResult[] = []
    for (const e of envelopes) {
      if (e.event_type === 'INSTANCE_CREATED' || e.event_type === 'INSTANCE_UPDATED') {
        const key = `${String(e.data.db_name)}\u0000${String(e.data.class_id)}\u0000${String(e.data.instance_id)}`
        results.push({ applied: e.event_type, rows: written.has(key) ? 1 : 0 })
      } else {
        results.push({ applied: e.event_type, rows: await apply(tx, e) })
      }
    }
    return results
  }

  return { handle, handleBatch }
}

/** The projection's single-event handler (see `createProjection` for the batch form too). */
export const createProjectionHandler = (options: ProjectionOptions): Handle =>
  createProjection(options).handle
