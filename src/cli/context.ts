import { createPinoLogger } from '../adapters/logger/pino.ts'
import { loadConfig } from '../config/env.ts'
import type { CairnConfig } from '../config/env.ts'
import type { Logger } from '../core/ports/logger.ts'

/** What every command starts from: the validated configuration and a logger (stderr for tools). */
export const cliContext = (
  options: { quiet?: boolean } = {},
): { config: CairnConfig; logger: Logger } => {
  const config = loadConfig()
  const logger = createPinoLogger({
    level: options.quiet === true ? 'warn' : config.logLevel,
    pretty: config.logFormat === 'pretty' || (config.logFormat === 'auto' && process.stdout.isTTY),
  })
  return { config, logger }
}
