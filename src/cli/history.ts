import type { Command } from 'commander'
import { openWriteSide } from '../config/compose.ts'
import { cliContext } from './context.ts'

export const registerHistory = (program: Command): void => {
  program
    .command('history')
    .description(
      "print an aggregate's events from the bucket, in sequence order (one JSON per line)",
    )
    .argument('<aggregateType>')
    .argument('<aggregateId>')
    .option('--from <seq>', 'first sequence number')
    .option('--to <seq>', 'last sequence number')
    .action(async (type: string, id: string, opts: { from?: string; to?: string }) => {
      const { config, logger } = cliContext({ quiet: true })
      await using ws = await openWriteSide(config, logger, { probe: false })
      const events = await ws.eventStore.readStream(type, id, {
        ...(opts.from === undefined ? {} : { fromSeq: Number(opts.from) }),
        ...(opts.to === undefined ? {} : { toSeq: Number(opts.to) }),
      })
      for (const e of events) process.stdout.write(`${JSON.stringify(e)}\n`)
      if (events.length === 0) process.stderr.write(`no events for ${type}/${id}\n`)
    })
}
