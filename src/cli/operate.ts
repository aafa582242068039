import { userInfo } from 'node:os'
import type { Command } from 'commander'
import { openObjectStore, openWriteSide } from '../config/compose.ts'
import { CairnError, ErrorCode } from '../core/errors.ts'
import { rebuildProjection } from '../domain/rebuild.ts'
import { segmentKeyFloor } from '../event-store/keys.ts'
import { REGISTRY_STATUSES, pipelineOverview } from '../operate/overview.ts'
import { loadCheckpoint, resetCheckpoint, resetTime } from '../publisher/checkpoint.ts'
import { createProcessedEventRegistry } from '../registry/processed-events.ts'
import { reconcileFromBucket } from '../event-store/reconcile.ts'
import { createSequenceAllocator, databaseClock } from '../sequencing/allocator.ts'
import { cliContext, progressOnStderr } from './context.ts'
import { fields, printJson, table } from './table.ts'

const print = printJson

/** Who runs the CLI, as recorded on an operator's retry or skip. */
const operatorActor = (): string => {
  let user: string
  try {
    user = userInfo().username
  } catch {
    user = process.env['USER'] ?? 'unknown'
  }
  return `operator@${user}`
}

const indent = (text: string): string =>
  text
    .split('\n')
    .map((l) => (l === '' ? l : `  ${l}`))
    .join('\n')

/**
 * The operator's commands (DESIGN.md section 8): pipeline status, parked and dead-lettered
 * events (retry or skip), the publisher's checkpoint (inspect, reset), and the reconcile of the
 * write side's registry from the bucket. They work on the configured backends; in embedded mode
 * stop `cairn start` first (PGlite has one process).
 */
export const registerOperate = (program: Command): void => {
  program
    .command('status')
    .description(
      'pipeline status: publisher checkpoint and lag, registry records per handler and status, stuck leases, quarantine',
    )
    .option('--json', 'one JSON object instead of tables')
    .action(async (opts: { json?: boolean }) => {
      const { config, logger } = cliContext({ quiet: true })
      await using ws = await openWriteSide(config, logger, { probe: false })
      // Lag is measured on the database's clock, the one that stamps the keys (not this host's).
      const clock = databaseClock(ws.sql)
      const report = await pipelineOverview({
        objectStore: ws.objectStore,
        sql: ws.sql,
        schema: config.sequencing.schema,
        nowUs: () => clock.now(),
      })
      const { handlers } = report
      if (opts.json === true) {
        print(report)
        return
      }
      const { publishers, ...publisher } = report.publisher
      process.stdout.write(`publisher\n${indent(fields(publisher))}\npublishers\n`)
      process.stdout.write(
        indent(
          table(publishers, [
            { title: 'id', value: (p) => p.id },
            { title: 'role', value: (p) => p.role },
            { title: 'host', value: (p) => p.host, max: 40 },
            { title: 'position', value: (p) => p.position ?? '', max: 60 },
            { title: 'seen', value: (p) => `${p.seen_seconds_ago} s ago`, align: 'right' },
          ]),
        ),
      )
      process.stdout.write('handlers\n')
      process.stdout.write(
        indent(
          table(Object.entries(handlers), [
            { title: 'handler', value: ([h]) => h },
            ...[...REGISTRY_STATUSES, 'lease_expired'].map((st) => ({
              title: st,
              value: ([, c]: [string, Record<string, number>]) => c[st] ?? 0,
              align: 'right' as const,
            })),
          ]),
        ),
      )
    })

  const parked = program
    .command('parked')
    .description('list dead-lettered (failed) and parked events; retry or skip them')
    .argument('[handler]', 'only this handler')
    .option('--json', 'one JSON object per line instead of a table')
    .action(async (handler: string | undefined, opts: { json?: boolean }) => {
      const { config, logger } = cliContext({ quiet: true })
      await using ws = await openWriteSide(config, logger, { probe: false })
      const registry = createProcessedEventRegistry({
        sql: ws.sql,
        schema: config.sequencing.schema,
        member: 'operator',
      })
      const rows = await registry.listParked(handler)
      if (opts.json === true) for (const r of rows) print(r)
      else
        process.stdout.write(
          table(rows, [
            { title: 'handler', value: (r) => r.handler },
            { title: 'event', value: (r) => r.eventId, max: 40 },
            { title: 'aggregate', value: (r) => `${r.aggregateType}/${r.aggregateId}`, max: 40 },
            { title: 'seq', value: (r) => r.seq, align: 'right' },
            { title: 'status', value: (r) => r.status },
            { title: 'attempts', value: (r) => r.attempts, align: 'right' },
            { title: 'last error', value: (r) => r.lastError, max: 60 },
            { title: 'since', value: (r) => r.updatedAt },
          ]),
        )
      process.stderr.write(`${rows.length} failed or parked\n`)
    })

  for (const [verb, what] of [
    ['retry', 'make failed or parked events claimable again (redriven from the bucket, in order)'],
    ['skip', 'skip failed or parked events: later events of their aggregates flow'],
  ] as const) {
    parked
      .command(verb)
      .description(what)
      .argument('<handler>')
      .argument('<eventIds...>')
      .action(async (handler: string, eventIds: string[]) => {
        const { config, logger } = cliContext({ quiet: true })
        await using ws = await openWriteSide(config, logger, { probe: false })
        const registry = createProcessedEventRegistry({
          sql: ws.sql,
          schema: config.sequencing.schema,
          member: 'operator',
        })
        const actor = operatorActor()
        const n =
          verb === 'retry'
            ? await registry.retryParked(handler, eventIds, actor)
            : await registry.skipParked(handler, eventIds, actor)
        process.stdout.write(
          `${verb === 'retry' ? 'released' : 'skipped'} ${n} of ${eventIds.length}\n`,
        )
        if (n < eventIds.length) {
          process.stderr.write('the others were not failed or parked for that handler\n')
        }
      })
  }

  program
    .command('projection')
    .description('the read model')
    .command('rebuild')
    .description(
      'rebuild the read model from the bucket alone (stop the projection workers first); shows progress',
    )
    .option('--yes', 'really empty and rebuild it')
    .action(async (opts: { yes?: boolean }) => {
      const { config, logger } = cliContext({ quiet: true })
      if (opts.yes !== true) {
        process.stdout.write(
          'would empty the read model and re-apply every domain event from the bucket; add --yes to do it\n',
        )
        return
      }
      await using ws = await openWriteSide(config, logger, { probe: false })
      const registry = createProcessedEventRegistry({
        sql: ws.sql,
        schema: config.sequencing.schema,
        member: 'operator-rebuild',
      })
      await registry.start()
      const started = Date.now()
      try {
        const applied = await rebuildProjection({
          eventStore: ws.eventStore,
          sql: ws.sql,
          schema: config.sequencing.schema,
          registry,
          onProgress: progressOnStderr(started),
        })
        process.stdout.write(
          `read model rebuilt: ${applied} domain events applied in ${((Date.now() - started) / 1000).toFixed(1)} s\n`,
        )
      } finally {
        await registry.stop()
      }
    })

  program
    .command('reconcile')
    .description(
      'rebuild the sequence allocator, the stream index and the idempotency records from the bucket alone (after PostgreSQL was lost or restored from an older backup); appends pause meanwhile; shows progress',
    )
    .option(
      '--check',
      'only compare the bucket with the registry: exit 0 when they agree, 1 when not',
    )
    .option('--yes', 'really rebuild')
    .option('--json', 'the summary as one JSON object')
    .action(async (opts: { check?: boolean; yes?: boolean; json?: boolean }) => {
      const { config, logger } = cliContext({ quiet: true })
      await using ws = await openWriteSide(config, logger, { probe: false })
      if (opts.check === true) {
        await ws.eventStore.checkAgainstBucket()
        process.stdout.write('the registry knows every segment in the bucket\n')
        return
      }
      if (opts.yes !== true) {
        process.stdout.write(
          'would pause appends, empty the sequence allocator, the stream index and the idempotency records, and rebuild them from every segment in the bucket; add --yes to do it\n',
        )
        return
      }
      const started = Date.now()
      let shown = 0
      const result = await reconcileFromBucket({
        store: ws.objectStore,
        allocator: createSequenceAllocator({ sql: ws.sql, schema: config.sequencing.schema }),
        handlerPrefix: config.sequencing.handlerPrefix,
        boundMs: config.eventStore.maxIndexDelayMs,
        log: logger,
        onProgress: (p) => {
          if (Date.now() - shown < 2_000 && p.segments < p.totalSegments) return
          shown = Date.now()
          process.stderr.write(
            `${p.segments}/${p.totalSegments} segments read, ${p.events} events indexed (${Math.round((Date.now() - started) / 1000)} s)\n`,
          )
        },
      })
      const summary = {
        segments: result.segments,
        gaps: result.gaps,
        events: result.events,
        malformed: result.malformed,
        clashes: result.clashes,
        seconds: Number(((Date.now() - started) / 1000).toFixed(1)),
      }
      if (opts.json === true) print(summary)
      else process.stdout.write(fields(summary))
      if (result.clashes.length > 0 || result.malformed.length > 0) process.exitCode = 1
    })

  const checkpoint = program
    .command('checkpoint')
    .description("inspect or reset the publisher's checkpoint")
  checkpoint
    .command('show')
    .description('print the checkpoint (the dedup snapshot as a count)')
    .option('--json', 'one JSON object')
    .action(async (opts: { json?: boolean }) => {
      const { config } = cliContext({ quiet: true })
      await using store = await openObjectStore(config)
      const { checkpoint: cp, etag } = await loadCheckpoint(store)
      if (cp === null) {
        process.stdout.write('no checkpoint yet: the publisher starts from the beginning\n')
        return
      }
      const { recent_event_ids, ...rest } = cp
      const shown = { ...rest, recent_event_ids: recent_event_ids.length, etag }
      if (opts.json === true) print(shown)
      else process.stdout.write(fields(shown))
    })
  checkpoint
    .command('reset')
    .description(
      'move the checkpoint back (or forward) to a time: the publisher republishes everything stored after it (consumers deduplicate)',
    )
    .requiredOption('--to <time>', 'ISO-8601 time, e.g. 2026-11-27T10:00:00Z')
    .option('--yes', 'really reset')
    .action(async (opts: { to: string; yes?: boolean }) => {
      const time = resetTime(opts.to, Date.now())
      if ('problem' in time) {
        throw new CairnError(ErrorCode.INVALID_CONFIG, `--to ${opts.to}: ${time.problem}`)
      }
      const { ms } = time
      const { config } = cliContext({ quiet: true })
      await using store = await openObjectStore(config)
      if (opts.yes !== true) {
        const { checkpoint: cp } = await loadCheckpoint(store)
        process.stdout.write(
          `would move the checkpoint from ${cp?.last_index_key ?? '(none)'} to ${segmentKeyFloor(ms * 1000)}; add --yes to do it\n`,
        )
        return
      }
      const moved = await resetCheckpoint(store, ms)
      if (moved === null) {
        throw new CairnError(
          ErrorCode.APPEND_FAILED,
          'the checkpoint changed while resetting it (the publisher saved meanwhile); run the command again',
        )
      }
      process.stdout.write(`checkpoint reset to ${moved.to}\n`)
    })
}
