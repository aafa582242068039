import type { Command } from 'commander'
import { openWriteSide } from '../config/compose.ts'
import { createEnvelope } from '../core/envelope.ts'
import { CairnError, ErrorCode } from '../core/errors.ts'
import { cliContext } from './context.ts'

const parseJsonObject = (label: string, text: string): Record<string, unknown> => {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (error) {
    throw new CairnError(
      ErrorCode.INVALID_ENVELOPE,
      `${label}: not valid JSON (${(error as Error).message})`,
    )
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new CairnError(ErrorCode.INVALID_ENVELOPE, `${label}: must be a JSON object`)
  }
  return value as Record<string, unknown>
}

export const registerAppend = (program: Command): void => {
  program
    .command('append')
    .description('append one event to an aggregate and print it as stored')
    .requiredOption('--type <aggregateType>', 'aggregate type, e.g. Instance')
    .requiredOption('--id <aggregateId>', 'aggregate id')
    .requiredOption('--event-type <eventType>', 'event type, e.g. THING_CREATED')
    .option('--data <json>', 'event data (a JSON object)', '{}')
    .option('--kind <kind>', 'command or domain', 'domain')
    .option('--event-id <id>', 'event id (default: a random UUID); the same id again is a no-op')
    .option(
      '--expected-seq <n>',
      'optimistic concurrency: the sequence the aggregate is expected to be at',
    )
    .action(async (opts: Record<string, string | undefined>) => {
      const { config, logger } = cliContext({ quiet: true })
      if (opts.kind !== 'command' && opts.kind !== 'domain') {
        throw new CairnError(ErrorCode.INVALID_ENVELOPE, '--kind must be command or domain')
      }
      const expected = opts.expectedSeq === undefined ? null : Number(opts.expectedSeq)
      await using ws = await openWriteSide(config, logger)
      const envelope = createEnvelope({
        ...(opts.eventId === undefined ? {} : { event_id: opts.eventId }),
        event_type: opts.eventType as string,
        aggregate_type: opts.type as string,
        aggregate_id: opts.id as string,
        data: parseJsonObject('--data', opts.data ?? '{}'),
        metadata: { kind: opts.kind },
      })
      const result = await ws.eventStore.append({ envelopes: [envelope], expectedSeq: expected })
      process.stdout.write(
        `${JSON.stringify({ outcome: result.outcome, envelope: result.envelopes[0] }, null, 2)}\n`,
      )
    })
}
