import { runService } from '../cli/service.ts'
import type { CairnConfig } from '../config/env.ts'
import { CairnError, ErrorCode } from '../core/errors.ts'
import type { DomainDefinition } from './define.ts'
import { commandRoute } from './define.ts'
import { openService } from './service.ts'
import type { DecideMode, ServiceComponents } from './service.ts'

export type RunOptions = {
  /** Which components this process runs (default: all, as in embedded mode). */
  readonly components?: ServiceComponents
  readonly decide?: DecideMode
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

/**
 * Runs a declared domain until SIGINT or SIGTERM, configured from the environment as `cairn
 * start` is (embedded mode by default: no services needed; docs/configuration.md): it serves
 * HTTP at once, waits for the services it needs, drains on a signal and closes in reverse order.
 * In distributed mode a process may run only some components (an OMS, or the workers).
 */
export const runDomain = (domain: DomainDefinition, options: RunOptions = {}): Promise<void> => {
  const components = options.components ?? { oms: true, publisher: true, workers: true }
  const check = (config: CairnConfig): void => {
    if (
      config.mode === 'distributed' &&
      components.oms &&
      config.oms.tokens.length === 0 &&
      !config.oms.authDisabled
    ) {
      throw new CairnError(
        ErrorCode.INVALID_CONFIG,
        'the OMS refuses to start in distributed mode without OMS_API_TOKENS (comma-separated bearer tokens); ' +
          'set OMS_AUTH_DISABLED=true to run it without authentication on purpose',
      )
    }
  }
  return runService(
    domain.name,
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
}
