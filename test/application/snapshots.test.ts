import { createPgliteSql } from '../../src/adapters/sql/pglite.ts'
import { snapshotContract } from '../contract/snapshots.ts'

snapshotContract([
  {
    name: 'PGlite',
    async create() {
      const sql = await createPgliteSql()
      return { sql, schema: 'cairn', drop: () => sql.close() }
    },
  },
])
