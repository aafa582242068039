import { Command } from 'commander'
import { cliContext, progressOnStderr } from '../cli/context.ts'
import { runCommand } from '../cli/run.ts'
import { runService } from '../cli/service.ts'
import { requireAuth } from '../cli/start.ts'
import { openWriteSide } from '../config/compose.ts'
import type { CairnConfig } from '../config/env.ts'
import { CairnError, ErrorCode } from '../core/errors.ts'
import { createProcessedEventRegistry } from '../registry/processed-events.ts'
import { commandRoute } from './define.ts'
import type { DomainDefinition } from './define.ts'
import { rebuildDeclaredProjection, setupProjection } from './reactions.ts'
import { openService } from './service.ts'
import type { DecideMode, ServiceComponents } from './service.ts'

export type RunOptions = {
  /** Where commands are decided (default `worker`; see `openService`). */
  readonly decide?: DecideMode
  /** The command line (default: `process.argv` after the script). */
  readonly argv?: readonly string[]
}

const banner =
  (domain: DomainDefinition) =>
  (url: string): string => {
    const lines = [`${domain.name} is running at ${url} (OpenAPI: ${url}/openapi.json).`]
    const first = domain.commands.find((c) => c.http !== null)
    const route = first === undefined ? null : commandRoute(domain.name, first)
    if (first !== undefined && route !== null) {
      lines.push(`  e.g. ${route.method} ${url}${route.path} (${first.type})`)
    }
    lines.push('Press Ctrl+C to stop.')
    return lines.join('\n')
  }

const requireDistributed = (domain: DomainDefinition, command: string) => (config: CairnConfig) => {
  if (config.mode !== 'distributed') {
    throw new CairnError(
      ErrorCode.INVALID_CONFIG,
      `${domain.name} ${command} runs one component of a distributed deployment (CAIRN_MODE=distributed); ` +
        'in embedded mode everything runs in one process: use `start`',
    )
  }
}

/**
 * A declared domain's command line, as `cairn`'s own: `start` (the default) runs everything in
 * one process (embedded mode by default: no services needed); `oms`, `publisher` and `workers`
 * run one component each (distributed mode); `rebuild <projection> --yes` rebuilds a projection
 * from the bucket alone. Configured from the environment (docs/configuration.md). A service runs
 * until SIGINT or SIGTERM, serving HTTP at once and waiting for the services it needs; it drains
 * on a signal and closes in reverse order.
 */
export const runDomain = (domain: DomainDefinition, options: RunOptions = {}): Promise<void> => {
  const serve = (
    component: string,
    components: ServiceComponents,
    check: (config: CairnConfig) => void,
  ) =>
    runService(
      `${domain.name}${component === 'start' ? '' : ` ${component}`}`,
      { oms: components.oms, publisher: components.publisher, workers: [] },
      {
        check,
        ...(components.oms ? { banner: banner(domain) } : {}),
        open: (config, logger, opts) =>
          openService({
            domain,
            config,
            logger,
            components,
            ...(options.decide === undefined ? {} : { decide: options.decide }),
            ...(opts?.metrics === undefined ? {} : { metrics: opts.metrics }),
            ...(opts?.running === undefined ? {} : { running: opts.running }),
            ...(opts?.wait === undefined ? {} : { wait: opts.wait }),
          }),
      },
    )

  const program = new Command()
    .name(domain.name)
    .description(`${domain.name}, a service on cairn. Configuration comes from the environment.`)
    .showHelpAfterError()
  program
    .command('start', { isDefault: true })
    .description(
      'run everything in one process: HTTP API, publisher, workers (embedded by default)',
    )
    .action(() => serve('start', { oms: true, publisher: true, workers: true }, requireAuth))
  program
    .command('oms')
    .description('run the HTTP API (distributed mode)')
    .action(() =>
      serve('oms', { oms: true, publisher: false, workers: false }, (config) => {
        requireDistributed(domain, 'oms')(config)
        requireAuth(config)
      }),
    )
  program
    .command('publisher')
    .description('run the publisher, bucket to Kafka (distributed mode)')
    .action(() =>
      serve(
        'publisher',
        { oms: false, publisher: true, workers: false },
        requireDistributed(domain, 'publisher'),
      ),
    )
  program
    .command('workers')
    .description(
      "run the domain's workers: commands, process managers, projections (distributed mode)",
    )
    .action(() =>
      serve(
        'workers',
        { oms: false, publisher: false, workers: true },
        requireDistributed(domain, 'workers'),
      ),
    )
  program
    .command('rebuild')
    .description(
      `rebuild a projection from the bucket alone (stop its workers first): ${domain.projections.map((p) => p.name).join(', ') || 'none declared'}`,
    )
    .argument('<projection>')
    .option('--yes', 'really empty and rebuild it')
    .action(async (name: string, opts: { yes?: boolean }) => {
      const projection = domain.projections.find((p) => p.name === name)
      if (projection === undefined) {
        throw new CairnError(
          ErrorCode.INVALID_CONFIG,
          `no projection ${JSON.stringify(name)}; declared: ${domain.projections.map((p) => p.name).join(', ') || 'none'}`,
        )
      }
      if (opts.yes !== true) {
        process.stdout.write(
          `would empty projection ${name} and apply every event it takes from the bucket; add --yes to do it\n`,
        )
        return
      }
      const { config, logger } = cliContext({ quiet: true })
      await using ws = await openWriteSide(config, logger, { probe: false })
      const schema = config.sequencing.schema
      await setupProjection(ws.sql, projection, schema)
      const registry = createProcessedEventRegistry({
        sql: ws.sql,
        schema,
        member: 'operator-rebuild',
      })
      await registry.start()
      const started = Date.now()
      try {
        const applied = await rebuildDeclaredProjection({
          domain,
          projection,
          eventStore: ws.eventStore,
          sql: ws.sql,
          schema,
          registry,
          onProgress: progressOnStderr(started),
        })
        process.stdout.write(
          `${JSON.stringify({ projection: name, applied, seconds: (Date.now() - started) / 1000 })}\n`,
        )
      } finally {
        await registry.stop()
      }
    })
  const argv = options.argv ?? process.argv.slice(2)
  return runCommand(() => program.parseAsync([...argv], { from: 'user' }))
}
