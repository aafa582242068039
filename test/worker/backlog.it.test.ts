import { createPgSql } from '../../src/adapters/sql/pg.ts'
import { workerBacklogContract } from '../contract/worker.ts'
import { kafkaBusCase } from '../support/bus.ts'
import { databaseUrl, uniqueName } from '../support/services.ts'

const kafka = kafkaBusCase()

workerBacklogContract(
  [
    {
      name: 'Kafka + PostgreSQL',
      async create() {
        const bus = await kafka.create()
        const sql = createPgSql({ connectionString: databaseUrl() })
        const schema = uniqueName('cairn_backlog').replace(/-/g, '_')
        return {
          bus,
          sql,
          schema,
          async close() {
            await bus.close()
            await sql.exec(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
            await sql.close()
          },
        }
      },
      // Deletes the backlog's topic and group.
      cleanup: () => kafka.cleanup?.() ?? Promise.resolve(),
    },
  ],
  // Generous: CI runs it on 2 cores next to other tests.
  { events: 100_000, timeoutMs: 600_000 },
)
