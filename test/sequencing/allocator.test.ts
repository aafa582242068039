import { createPgliteSql } from '../../src/adapters/sql/pglite.ts'
import { allocatorContract, allocatorWorld } from '../contract/allocator.ts'

allocatorContract(
  [
    {
      name: 'PGlite',
      async create() {
        const sql = await createPgliteSql()
        return allocatorWorld(sql, sql, 'cairn_alloc', () => sql.close())
      },
    },
  ],
  { twoConnections: false },
)
