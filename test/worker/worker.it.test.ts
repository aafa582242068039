import { createKafkaBus } from '../../src/adapters/bus/kafka-bus.ts'
import { createPgSql } from '../../src/adapters/sql/pg.ts'
import { workerContract } from '../contract/worker.ts'
import { databaseUrl, kafkaBrokers, uniqueName } from '../support/services.ts'

workerContract([
  {
    name: 'Kafka + PostgreSQL',
    concurrentTransactions: true,
    async create() {
      const bus = createKafkaBus({ brokers: kafkaBrokers() })
      const sql = createPgSql({ connectionString: databaseUrl() })
      const schema = uniqueName('cairn_wk').replace(/-/g, '_')
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
  },
])
