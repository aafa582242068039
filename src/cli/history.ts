import type { Command } from 'commander'
import { openObjectStore, openWriteSide } from '../config/compose.ts'
import type { StoredEnvelope } from '../core/envelope.ts'
import { CairnError, ErrorCode } from '../core/errors.ts'
import { followEvents } from '../event-store/follow.ts'
import { cliContext } from './context.ts'
import { printJson, table } from './table.ts'
import type { Column } from './table.ts'

const EVENT_COLUMNS: readonly Column<StoredEnvelope>[] = [
  { title: 'seq', value: (e) => e.sequence_number, align: 'right' },
  { title: 'type', value: (e) => e.event_type, max: 40 },
  { title: 'kind', value: (e) => e.metadata.kind },
  { title: 'occurred_at', value: (e) => e.occurred_at },
  { title: 'actor', value: (e) => e.actor, max: 24 },
  { title: 'event_id', value: (e) => e.event_id, max: 36 },
  { title: 'data', value: (e) => e.data, max: 80 },
]

const TAIL_COLUMNS: readonly Column<StoredEnvelope>[] = [
  { title: 'occurred_at', value: (e) => e.occurred_at, max: 24 },
  { title: 'aggregate', value: (e) => `${e.aggregate_type}/${e.aggregate_id}`, max: 32 },
  { title: 'seq', value: (e) => e.sequence_number, align: 'right', max: 6 },
  { title: 'type', value: (e) => e.event_type, max: 28 },
  { title: 'data', value: (e) => e.data, max: 60 },
]

const sequence = (name: string, v: string | undefined): number | undefined => {
  if (v === undefined) return undefined
  if (!/^\d{1,15}$/.test(v) || Number(v) < 1) {
    throw new CairnError(ErrorCode.INVALID_CONFIG, `${name} ${v}: a sequence number ≥ 1`)
  }
  return Number(v)
}

export const registerHistory = (program: Command): void => {
  program
    .command('history')
    .description("an aggregate's events from the bucket, in sequence order")
    .argument('<aggregateType>')
    .argument('<aggregateId>')
    .option('--from <seq>', 'first sequence number')
    .option('--to <seq>', 'last sequence number')
    .option('--json', 'each envelope as one JSON object per line')
    .action(
      async (type: string, id: string, opts: { from?: string; to?: string; json?: boolean }) => {
        const from = sequence('--from', opts.from)
        const to = sequence('--to', opts.to)
        const { config, logger } = cliContext({ quiet: true })
        await using ws = await openWriteSide(config, logger, { probe: false })
        const events = await ws.eventStore.readStream(type, id, {
          ...(from === undefined ? {} : { fromSeq: from }),
          ...(to === undefined ? {} : { toSeq: to }),
        })
        if (opts.json === true) for (const e of events) printJson(e)
        else if (events.length > 0) process.stdout.write(table(events, EVENT_COLUMNS))
        if (events.length === 0) process.stderr.write(`no events for ${type}/${id}\n`)
      },
    )

  program
    .command('tail')
    .description(
      'follow new events live, from the bucket (works beside a running cairn, embedded too); Ctrl-C stops',
    )
    .option('--type <aggregateType>', 'only aggregates of this type')
    .option('--id <aggregateId>', 'only this aggregate (with or without --type)')
    .option('--since <time>', 'start at this ISO-8601 time instead of now')
    .option('--json', 'each envelope as one JSON object per line')
    .action(async (opts: { type?: string; id?: string; since?: string; json?: boolean }) => {
      const since = opts.since === undefined ? Date.now() : Date.parse(opts.since)
      if (
        Number.isNaN(since) ||
        (opts.since !== undefined && !/^\d{4}-\d{2}-\d{2}T/.test(opts.since))
      )
        throw new CairnError(
          ErrorCode.INVALID_CONFIG,
          `--since ${opts.since}: not an ISO-8601 time`,
        )
      const { config } = cliContext({ quiet: true })
      await using store = await openObjectStore(config)
      const stop = new AbortController()
      const onSignal = () => stop.abort()
      process.once('SIGINT', onSignal)
      process.once('SIGTERM', onSignal)
      let header = opts.json === true
      try {
        for await (const e of followEvents(store, {
          sinceMs: since,
          lateMs: config.eventStore.maxIndexDelayMs,
          signal: stop.signal,
        })) {
          if (opts.type !== undefined && e.aggregate_type !== opts.type) continue
          if (opts.id !== undefined && e.aggregate_id !== opts.id) continue
          if (opts.json === true) {
            printJson(e)
            continue
          }
          // A table of one row per event as it comes: the header once, then each line.
          const lines = table([e], TAIL_COLUMNS, { fixed: true }).split('\n')
          if (!header) {
            process.stdout.write(`${lines[0]}\n`)
            header = true
          }
          process.stdout.write(`${lines[1]}\n`)
        }
      } finally {
        process.off('SIGINT', onSignal)
        process.off('SIGTERM', onSignal)
      }
    })
}
