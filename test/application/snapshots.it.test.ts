import { createPgSql } from '../../src/adapters/sql/pg.ts'
import { snapshotContract } from '../contract/snapshots.ts'
import { databaseUrl, uniqueName } from '../support/services.ts'

snapshotContract([
  {
    name: 'PostgreSQL',
    async create() {
      // A pool of several connections, so the concurrent saves really race.
      const sql = createPgSql({ connectionString: databaseUrl() })
      const schema = uniqueName('cairn_snap').replace(/-/g, '_')
      return {
        sql,
        schema,
        async drop() {
          await sql.exec(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
          await sql.close()
        },
      }
    },
  },
])
