import { createInProcessBus } from '../../src/adapters/bus/in-process-bus.ts'
import { createPgliteSql } from '../../src/adapters/sql/pglite.ts'
import { workerContract } from '../contract/worker.ts'

workerContract([
  {
    name: 'in-process bus + PGlite',
    async create() {
      const bus = createInProcessBus()
      const sql = await createPgliteSql()
      return {
        bus,
        sql,
        schema: 'cairn_worker',
        async close() {
          await bus.close()
          await sql.close()
        },
      }
    },
  },
])
