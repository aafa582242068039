import type { Command } from 'commander'
import type { CairnConfig } from '../config/env.ts'
import { WORKER_ROLES } from '../config/runtime.ts'
import type { WorkerRole } from '../config/runtime.ts'
import { CairnError, ErrorCode } from '../core/errors.ts'
import { runService } from './service.ts'

const banner = (url: string): string =>
  [
    `cairn is running at ${url} (OpenAPI: ${url}/openapi.json, console: ${url}/console). Try:`,
    `  curl -s -X POST ${url}/api/v1/databases -H 'content-type: application/json' -d '{"name":"demo"}'`,
    `  curl -s ${url}/api/v1/databases`,
    'Press Ctrl+C to stop.',
  ].join('\n')

/** The OMS in distributed mode needs bearer tokens, or authentication turned off on purpose. */
export const requireAuth = (config: CairnConfig): void => {
  if (config.mode === 'distributed' && config.oms.tokens.length === 0 && !config.oms.authDisabled) {
    throw new CairnError(
      ErrorCode.INVALID_CONFIG,
      'the OMS refuses to start in distributed mode without OMS_API_TOKENS (comma-separated bearer tokens); ' +
        'set OMS_AUTH_DISABLED=true to run it without authentication on purpose',
    )
  }
}

const requireDistributed =
  (command: string, more?: (config: CairnConfig) => void) =>
  (config: CairnConfig): void => {
    if (config.mode !== 'distributed') {
      throw new CairnError(
        ErrorCode.INVALID_CONFIG,
        `cairn ${command} runs one component of the distributed deployment (CAIRN_MODE=distributed); ` +
          'in embedded mode everything runs in one process: use `cairn start`',
      )
    }
    more?.(config)
  }

/**
 * `cairn start` runs everything in one process (embedded mode by default: no services); `cairn
 * oms`, `cairn publisher` and `cairn worker <roles…>` run one component each (distributed mode).
 */
export const registerStart = (program: Command): void => {
  program
    .command('start')
    .description(
      'run all of cairn in one process: OMS, publisher, workers, projection (embedded mode by default: no services needed)',
    )
    .action(() =>
      runService(
        'cairn',
        { oms: true, publisher: true, workers: WORKER_ROLES },
        { check: requireAuth, banner },
      ),
    )

  program
    .command('oms')
    .description('run the OMS, the HTTP command and query API (distributed mode)')
    .action(() =>
      runService(
        'oms',
        { oms: true, publisher: false, workers: [] },
        { check: requireDistributed('oms', requireAuth) },
      ),
    )

  program
    .command('publisher')
    .description('run the event publisher, bucket to Kafka (distributed mode)')
    .action(() =>
      runService(
        'publisher',
        { oms: false, publisher: true, workers: [] },
        { check: requireDistributed('publisher') },
      ),
    )

  program
    .command('worker')
    .description('run workers of the reference domain (distributed mode)')
    .argument('<roles...>', `one or more of ${WORKER_ROLES.join(', ')}`)
    .action((roles: string[]) => {
      const unknown = roles.filter((r) => !(WORKER_ROLES as readonly string[]).includes(r))
      if (unknown.length > 0) {
        throw new CairnError(
          ErrorCode.INVALID_CONFIG,
          `unknown worker role ${unknown.join(', ')}: use ${WORKER_ROLES.join(', ')}`,
        )
      }
      return runService(
        'worker',
        { oms: false, publisher: false, workers: [...new Set(roles)] as WorkerRole[] },
        { check: requireDistributed('worker') },
      )
    })
}
