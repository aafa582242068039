/**
 * Structured logger port (pino's shape). Library code logs through this, never `console`.
 * Fields go first, the message second; secrets never go in either.
 */
export type LogFn = (fields: Record<string, unknown>, message: string) => void

export type Logger = {
  debug: LogFn
  info: LogFn
  warn: LogFn
  error: LogFn
  child(bindings: Record<string, unknown>): Logger
}

const noop: LogFn = () => {}

export const silentLogger: Logger = Object.freeze({
  debug: noop,
  info: noop,
  warn: noop,
  error: noop,
  child: () => silentLogger,
})
