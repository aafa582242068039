import { createPgSql } from '../../src/adapters/sql/pg.ts'
import { registryContract, registryWorld } from '../contract/registry.ts'
import { databaseUrl, uniqueName } from '../support/services.ts'

registryContract([
  {
    name: 'PostgreSQL',
    async create() {
      const sql = createPgSql({ connectionString: databaseUrl() })
      const second = createPgSql({ connectionString: databaseUrl() })
      const schema = uniqueName('cairn_reg').replace(/-/g, '_')
      return registryWorld(sql, second, schema, async () => {
        await sql.exec(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
        await second.close()
        await sql.close()
      })
    },
  },
])
