import { createPgliteSql } from '../../src/adapters/sql/pglite.ts'
import { registryContract, registryWorld } from '../contract/registry.ts'

registryContract([
  {
    name: 'PGlite',
    async create() {
      const sql = await createPgliteSql()
      return registryWorld(sql, sql, 'cairn_registry', () => sql.close())
    },
  },
])
