import type { Command } from 'commander'
import { openSql } from '../config/compose.ts'
import { migrate } from '../adapters/sql/migrations.ts'
import { cliContext } from './context.ts'

/** `cairn migrate`: applies the schema migrations (allocator, registry, read model) and exits. */
export const registerMigrate = (program: Command): void => {
  program
    .command('migrate')
    .description(
      'apply the PostgreSQL migrations (sequence allocator, registry, read model) and exit',
    )
    .action(async () => {
      const { config } = cliContext({ quiet: true })
      const sql = await openSql(config)
      try {
        const applied = await migrate(sql, config.sequencing.schema)
        process.stdout.write(
          applied.length === 0
            ? `schema ${config.sequencing.schema} is up to date\n`
            : `applied to schema ${config.sequencing.schema}: ${applied.join(', ')}\n`,
        )
      } finally {
        await sql.close()
      }
    })
}
