import { createPgSql } from '../../src/adapters/sql/pg.ts'
import { allocatorContract, allocatorWorld } from '../contract/allocator.ts'
import { databaseUrl, uniqueName } from '../support/services.ts'

allocatorContract(
  [
    {
      name: 'PostgreSQL',
      async create() {
        const sql = createPgSql({ connectionString: databaseUrl() })
        const second = createPgSql({ connectionString: databaseUrl() })
        const schema = uniqueName('cairn_alloc').replace(/-/g, '_')
        return allocatorWorld(sql, second, schema, async () => {
          await sql.exec(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
          await second.close()
          await sql.close()
        })
      },
    },
  ],
  { twoConnections: true },
)
