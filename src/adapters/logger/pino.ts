import { pino } from 'pino'
import type { Logger } from '../../core/ports/logger.ts'

/** Structured JSON logs on stdout (pino), behind the logger port. */
export const createPinoLogger = (options: { level: string; name?: string }): Logger => {
  const wrap = (p: pino.Logger): Logger => ({
    debug: (fields, message) => p.debug(fields, message),
    info: (fields, message) => p.info(fields, message),
    warn: (fields, message) => p.warn(fields, message),
    error: (fields, message) => p.error(fields, message),
    child: (bindings) => wrap(p.child(bindings)),
  })
  return wrap(
    pino({
      level: options.level,
      name: options.name ?? 'cairn',
      // Defence in depth: secrets are never logged on purpose; these paths are blanked anyway.
      redact: ['secretAccessKey', 'password', 'databaseUrl', '*.secretAccessKey', '*.databaseUrl'],
    }),
  )
}
