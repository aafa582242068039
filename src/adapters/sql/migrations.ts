import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { CairnError, ErrorCode } from '../../core/errors.ts'
import type { Sql } from '../../core/ports/sql.ts'

const MIGRATIONS_DIR = fileURLToPath(new URL('../../../migrations/', import.meta.url))

/** Versions of the per-event layout's schema (before segments): refused with their own message. */
const RETIRED_VERSIONS: ReadonlySet<string> = new Set([
  '002_processed_events',
  '004_set_based_claims',
  '005_claims_recorded_done',
  '006_claim_batch_arrays',
  '007_reserve_batch',
])

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/

export const assertSchemaName = (schema: string): string => {
  if (!SCHEMA_NAME.test(schema)) {
    throw new CairnError(
      ErrorCode.INVALID_CONFIG,
      `schema name ${JSON.stringify(schema)} must match ${SCHEMA_NAME.source} (lower-case SQL identifier)`,
    )
  }
  return schema
}

/**
 * Applies the numbered plain-SQL files of `migrations/` that the schema has not seen yet, in
 * order, each in its own transaction, under an advisory lock so concurrent starters take turns.
 * `{{schema}}` in a file stands for the schema name. Returns the versions applied. A schema that
 * holds a version this code does not know (a newer cairn migrated it) is refused: SCHEMA_TOO_NEW.
 */
export const migrate = async (
  sql: Sql,
  schema: string,
  dir: string = MIGRATIONS_DIR,
): Promise<string[]> => {
  assertSchemaName(schema)
  const files = (await readdir(dir)).filter((f) => /^\d{3}_[a-z0-9_]+\.sql$/.test(f)).sort()
  return sql.transaction(async (tx) => {
    // One lock for all migrations of this schema; held until this transaction ends.
    await tx.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`cairn-migrate:${schema}`])
    await tx.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`)
    await tx.query(
      `CREATE TABLE IF NOT EXISTS ${schema}.schema_migrations (
         version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`,
    )
    const done = new Set(
      (await tx.query<{ version: string }>(`SELECT version FROM ${schema}.schema_migrations`)).map(
        (r) => r.version,
      ),
    )
    const known = new Set(files.map((f) => f.replace(/\.sql$/, '')))
    const unknown = [...done].filter((v) => !known.has(v)).sort()
    if (unknown.some((v) => RETIRED_VERSIONS.has(v))) {
      throw new CairnError(
        ErrorCode.SCHEMA_TOO_NEW,
        `schema ${schema} was made by a cairn of the retired per-event layout (${unknown.join(', ')}). ` +
          'Its tables are derived data and this cairn does not read that layout: start on a new ' +
          `schema and a new bucket, or drop it (DROP SCHEMA ${schema} CASCADE)`,
        { details: { schema, unknown } },
      )
    }
    if (unknown.length > 0) {
      // Older code on a newer schema could write what the newer code no longer reads.
      throw new CairnError(
        ErrorCode.SCHEMA_TOO_NEW,
        `schema ${schema} has migrations this version of cairn does not know (${unknown.join(', ')}): ` +
          'a newer cairn migrated it. Run that version or a later one',
        { details: { schema, unknown } },
      )
    }
    const applied: string[] = []
    for (const file of files) {
      const version = file.replace(/\.sql$/, '')
      if (done.has(version)) continue
      const script = (await readFile(path.join(dir, file), 'utf8')).replaceAll('{{schema}}', schema)
      await tx.exec(script)
      await tx.query(`INSERT INTO ${schema}.schema_migrations (version) VALUES ($1)`, [version])
      applied.push(version)
    }
    return applied
  })
}
