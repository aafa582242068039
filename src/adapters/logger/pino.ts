import { pino } from 'pino'
import type { Logger } from '../../core/ports/logger.ts'

const LEVELS: Readonly<Record<number, string>> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO ',
  40: 'WARN ',
  50: 'ERROR',
  60: 'FATAL',
}

/** Fields every line carries that the readable form shows elsewhere or leaves out. */
const SHOWN_APART = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'name'])

const value = (v: unknown): string => {
  if (typeof v === 'string') return /[\s"=]/.test(v) || v === '' ? JSON.stringify(v) : v
  return JSON.stringify(v) ?? String(v)
}

/**
 * One JSON log line as a person reads it on a terminal: `12:00:01.234 INFO  message key=value`.
 * A line that is not JSON is passed through as it is.
 */
export const prettyLine = (line: string, color: boolean): string => {
  let entry: Record<string, unknown>
  try {
    entry = JSON.parse(line) as Record<string, unknown>
  } catch {
    return line
  }
  const time =
    typeof entry.time === 'number' ? new Date(entry.time).toISOString().slice(11, 23) : ''
  const level = typeof entry.level === 'number' ? (LEVELS[entry.level] ?? 'LOG  ') : 'LOG  '
  const paint = (code: number, text: string) => (color ? `\u001b[${code}m${text}\u001b[0m` : text)
  const levelShown =
    entry.level === 50 || entry.level === 60
      ? paint(31, level)
      : entry.level === 40
        ? paint(33, level)
        : entry.level === 20
          ? paint(90, level)
          : paint(32, level)
  const fields = Object.entries(entry)
    .filter(([k]) => !SHOWN_APART.has(k))
    .map(([k, v]) => `${paint(90, `${k}=`)}${value(v)}`)
  const msg = typeof entry.msg === 'string' ? entry.msg : ''
  return [paint(90, time), levelShown, msg, ...fields].filter((p) => p !== '').join(' ')
}

/**
 * Structured logs on stdout (pino), behind the logger port: JSON lines, or with `pretty` the same
 * entries as readable lines (for a terminal; a pipe or a collector gets JSON).
 */
export const createPinoLogger = (options: {
  level: string
  name?: string
  pretty?: boolean
}): Logger => {
  const wrap = (p: pino.Logger): Logger => ({
    debug: (fields, message) => p.debug(fields, message),
    info: (fields, message) => p.info(fields, message),
    warn: (fields, message) => p.warn(fields, message),
    error: (fields, message) => p.error(fields, message),
    child: (bindings) => wrap(p.child(bindings)),
  })
  const settings = {
    level: options.level,
    name: options.name ?? 'cairn',
    // Defence in depth: secrets are never logged on purpose; these paths are blanked anyway.
    redact: ['secretAccessKey', 'password', 'databaseUrl', '*.secretAccessKey', '*.databaseUrl'],
  }
  if (options.pretty !== true) return wrap(pino(settings))
  const color = process.stdout.hasColors?.() ?? false
  return wrap(
    pino(settings, {
      write: (chunk: string) => {
        for (const line of chunk.split('\n')) {
          if (line !== '') process.stdout.write(`${prettyLine(line, color)}\n`)
        }
      },
    }),
  )
}
