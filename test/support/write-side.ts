import { createPgSql } from '../../src/adapters/sql/pg.ts'
import { createPgliteSql } from '../../src/adapters/sql/pglite.ts'
import { migrate } from '../../src/adapters/sql/migrations.ts'
import type { ObjectStore } from '../../src/core/ports/object-store.ts'
import type { Sql } from '../../src/core/ports/sql.ts'
import { createEventStore } from '../../src/event-store/event-store.ts'
import type { EventStore, EventStoreOptions } from '../../src/event-store/event-store.ts'
import { createSequenceAllocator } from '../../src/sequencing/allocator.ts'
import { fsStoreCase, s3StoreCases } from './adapters.ts'
import type { AdapterCase } from './contract.ts'
import { databaseUrl, uniqueName } from './services.ts'

/** A bucket (or directory) plus a registry schema, and event stores made over them. */
export type WriteSide = {
  readonly objectStore: ObjectStore
  readonly sql: Sql
  readonly schema: string
  /** Another connection to the same registry (a second allocator instance, as another process has). */
  readonly secondSql: Sql
  store(options?: Partial<EventStoreOptions> & { sql?: Sql; objectStore?: ObjectStore }): EventStore
  close(): Promise<void>
}

export const makeWriteSide = async (
  objectCase: AdapterCase<ObjectStore>,
  registry: 'pg' | 'pglite',
): Promise<WriteSide> => {
  const objectStore = await objectCase.create()
  const schema = uniqueName('cairn_t').replace(/-/g, '_')
  const sql =
    registry === 'pg' ? createPgSql({ connectionString: databaseUrl() }) : await createPgliteSql()
  const secondSql = registry === 'pg' ? createPgSql({ connectionString: databaseUrl() }) : sql
  await migrate(sql, schema)
  const stores: EventStore[] = []
  return {
    objectStore,
    sql,
    secondSql,
    schema,
    store(options = {}) {
      const s = createEventStore({
        objectStore: options.objectStore ?? objectStore,
        allocator: createSequenceAllocator({ sql: options.sql ?? sql, schema }),
        repairIntervalMs: 0,
        ...options,
      })
      stores.push(s)
      return s
    },
    async close() {
      for (const s of stores) await s.close()
      if (registry === 'pg') {
        await sql.exec(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
        await secondSql.close()
      }
      await sql.close()
      await objectStore.close()
      await objectCase.cleanup?.()
    },
  }
}

/** The write side on every backend: filesystem + PGlite, and MinIO / SeaweedFS + PostgreSQL. */
export const writeSideCases = (withServices: boolean): AdapterCase<WriteSide>[] => {
  const fs = fsStoreCase()
  const cases: AdapterCase<WriteSide>[] = [
    { name: 'filesystem + PGlite', create: () => makeWriteSide(fs, 'pglite') },
  ]
  if (withServices) {
    for (const s3 of s3StoreCases()) {
      cases.push({ name: `${s3.name} + PostgreSQL`, create: () => makeWriteSide(s3, 'pg') })
    }
  }
  return cases
}
