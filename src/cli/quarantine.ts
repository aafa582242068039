import type { Command } from 'commander'
import { openObjectStore } from '../config/compose.ts'
import { listQuarantine } from '../publisher/publisher.ts'
import { cliContext } from './context.ts'

export const registerQuarantine = (program: Command): void => {
  program
    .command('quarantine')
    .description(
      'list the index entries the publisher set aside (unreadable segments), with the reason',
    )
    .action(async () => {
      const { config } = cliContext({ quiet: true })
      await using store = await openObjectStore(config)
      const records = await listQuarantine(store)
      for (const r of records) process.stdout.write(`${JSON.stringify(r)}\n`)
      process.stderr.write(`${records.length} quarantined\n`)
    })
}
