import type { Command } from 'commander'
import { migrateSchema, openSql } from '../config/compose.ts'
import { createStartupGate } from '../config/startup.ts'
import { cliContext } from './context.ts'

/**
 * `cairn migrate`: applies the schema migrations (allocator, registry, read model) and exits. It
 * waits for PostgreSQL like the components do (a deployment job may run before the database is
 * up); SIGINT or SIGTERM stops the waiting.
 */
export const registerMigrate = (program: Command): void => {
  program
    .command('migrate')
    .description(
      'apply the PostgreSQL migrations (sequence allocator, registry, read model) and exit; waits for PostgreSQL',
    )
    .action(async () => {
      const { config, logger } = cliContext({ quiet: true })
      const stop = new AbortController()
      const onSignal = () => stop.abort()
      process.once('SIGINT', onSignal)
      process.once('SIGTERM', onSignal)
      const sql = await openSql(config)
      try {
        const gate = createStartupGate({ logger, signal: stop.signal })
        const applied = await gate.wait(`the database (${sql.describe})`, () =>
          migrateSchema(sql, config.sequencing.schema),
        )
        process.stdout.write(
          applied.length === 0
            ? `schema ${config.sequencing.schema} is up to date\n`
            : `applied to schema ${config.sequencing.schema}: ${applied.join(', ')}\n`,
        )
      } finally {
        process.off('SIGINT', onSignal)
        process.off('SIGTERM', onSignal)
        await sql.close()
      }
    })
}
