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

/** Progress of a long replay on stderr, at most every 2 s: `N events applied (T s)`. */
export const progressOnStderr = (started: number): ((applied: number) => void) => {
  let shown = 0
  return (n) => {
    if (Date.now() - shown < 2_000) return
    shown = Date.now()
    process.stderr.write(`${n} events applied (${Math.round((Date.now() - started) / 1000)} s)\n`)
  }
}
