import type { StoredEnvelope } from '../core/envelope.ts'
import { CairnError, ErrorCode } from '../core/errors.ts'
import type { SqlQueryable } from '../core/ports/sql.ts'
import type { Handle } from '../worker/worker.ts'
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

export const createProjectionHandler = (options: ProjectionOptions): Handle => {
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

  return async (envelope, ctx): Promise<ProjectionResult> => {
    if (ctx.tx === undefined) {
      throw new CairnError(
        ErrorCode.INVALID_CONFIG,
        'the projection is transactional: run its worker with `transactional` set',
      )
    }
    if (envelope.metadata.kind !== 'domain') {
      throw new CairnError(
        ErrorCode.INVALID_ENVELOPE,
        `the projection applies domain events only; ${envelope.event_id} is a ${String(envelope.metadata.kind)}`,
      )
    }
    const rows = await apply(ctx.tx, envelope)
    return { applied: envelope.event_type, rows }
  }
}
