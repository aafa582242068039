import { CairnError, ErrorCode, isCairnError } from '../core/errors.ts'
import type { Logger } from '../core/ports/logger.ts'
import { backoffMs } from '../worker/backoff.ts'

/**
 * Start-up in any order: a component started before PostgreSQL, Kafka or the object store is
 * reachable waits for each with backoff, says what it waits for (a log line per attempt, and
 * `describe()` for `/readyz`), and goes on when it answers. It stops only for what waiting cannot
 * fix: bad configuration, a bucket that fails the conformance probe, a schema newer than the code
 * (any failure `isWorthWaiting` does not recognise).
 */
export type StartupGate = {
  /**
   * Runs `attempt` until it succeeds. A failure worth waiting for is logged and tried again after
   * a backoff (up to `maxDelayMs`); any other failure is thrown. Aborting the signal ends the
   * wait with a `CLOSED` error.
   */
  readonly wait: <T>(what: string, attempt: () => Promise<T>) => Promise<T>
  /** `starting`, or what the process waits for and the last reason (for `/readyz`). */
  readonly describe: () => string
}

export type StartupGateOptions = {
  readonly logger: Logger
  /** Stops the waiting (SIGTERM during start-up). */
  readonly signal?: AbortSignal
  /** First retry delay (default 250 ms); each next one doubles, up to `maxDelayMs`. */
  readonly baseDelayMs?: number
  /** Longest delay between attempts (default 5 000 ms). */
  readonly maxDelayMs?: number
}

/** Tries once: the default of openWriteSide and openCairn (one-shot commands, library callers). */
export const noWait: StartupGate['wait'] = (_what, attempt) => attempt()

export const createStartupGate = (options: StartupGateOptions): StartupGate => {
  const { logger, signal } = options
  const baseMs = options.baseDelayMs ?? 250
  const maxMs = options.maxDelayMs ?? 5_000
  let waitingFor: { readonly what: string; readonly reason: string } | undefined
  let trying: string | undefined

  const sleep = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', done)
        resolve()
      }
      const timer = setTimeout(done, ms)
      signal?.addEventListener('abort', done, { once: true })
    })

  const aborted = (): boolean => signal?.aborted === true
  /** The attempt, or a rejection as soon as the signal aborts (a connect may hang for minutes). */
  const untilAborted = <T>(attempt: Promise<T>): Promise<T> => {
    if (signal === undefined) return attempt
    attempt.catch(() => {})
    let onAbort = (): void => {}
    const abandoned = new Promise<never>((_, reject) => {
      onAbort = () => reject(new Error('aborted'))
      signal.addEventListener('abort', onAbort, { once: true })
    })
    return Promise.race([attempt, abandoned]).finally(() =>
      signal.removeEventListener('abort', onAbort),
    )
  }
  const stopped = (what: string): CairnError =>
    new CairnError(ErrorCode.CLOSED, `stopped while waiting for ${what}`)

  return {
    wait: async (what, attempt) => {
      const started = Date.now()
      let failures = 0
      for (;;) {
        if (aborted()) throw stopped(what)
        trying = what
        try {
          const result = await untilAborted(attempt())
          if (failures > 0) {
            logger.info({ waited_for: what, waited_ms: Date.now() - started }, `${what} is there`)
          }
          waitingFor = undefined
          trying = undefined
          return result
        } catch (error) {
          if (aborted()) throw stopped(what)
          if (!isWorthWaiting(error)) throw error
          failures++
          const reason = reasonOf(error)
          waitingFor = { what, reason }
          const delay = backoffMs(failures, { baseMs, maxMs, random: () => 1 })
          logger.warn(
            { waiting_for: what, reason, attempt: failures, retry_in_ms: delay },
            `waiting for ${what}`,
          )
          await sleep(delay)
        }
      }
    },
    describe: () =>
      waitingFor !== undefined
        ? `waiting for ${waitingFor.what}: ${waitingFor.reason}`
        : trying !== undefined
          ? `starting: connecting to ${trying}`
          : 'starting',
  }
}

/** Node's socket and name-resolution errors of a service that is not (yet) there. */
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  // A name not resolvable yet (a service whose DNS entry appears when it is deployed).
  'ENOTFOUND',
])

/**
 * PostgreSQL's SQLSTATEs of a server that is starting, stopping, full or busy: class 08
 * (connection exception), 57P01–57P03 (shutting down, starting up), 53300 (too many connections),
 * 40001/40P01 (serialisation failure, deadlock). Authentication (28…) or a missing database
 * (3D000) are configuration: not worth waiting for.
 */
const isTransientSqlState = (code: string): boolean =>
  /^08[0-9A-Z]{3}$/.test(code) ||
  ['57P01', '57P02', '57P03', '53300', '40001', '40P01'].includes(code)

// How `pg` reports a connection lost or never made (errors without a code).
const PG_CONNECTION_MESSAGE =
  /^(Connection terminated|Client has encountered a connection error|timeout exceeded when trying to connect)/

/** Codes that waiting never fixes, whatever their cause says. */
const FATAL_CODES: ReadonlySet<string> = new Set([
  ErrorCode.INVALID_CONFIG,
  ErrorCode.BACKEND_NONCONFORMANT,
  ErrorCode.SCHEMA_TOO_NEW,
])

/**
 * Whether a failure at start-up is one of a dependency that is not reachable yet (worth waiting
 * for) rather than one waiting cannot fix. A `CairnError` says so with `retryable`; otherwise its
 * cause, a socket error, PostgreSQL's SQLSTATE or `pg`'s connection messages decide.
 */
export const isWorthWaiting = (error: unknown, depth = 0): boolean => {
  if (depth > 8 || !(error instanceof Error)) return false
  if (isCairnError(error)) {
    if (FATAL_CODES.has(error.code)) return false
    if (error.retryable) return true
    return isWorthWaiting(error.cause, depth + 1)
  }
  const code = (error as { code?: unknown }).code
  if (typeof code === 'string' && (NETWORK_CODES.has(code) || isTransientSqlState(code))) {
    return true
  }
  if (PG_CONNECTION_MESSAGE.test(error.message)) return true
  // Node reports a refused connection to every address of a name together.
  if (error instanceof AggregateError && error.errors.some((e) => isWorthWaiting(e, depth + 1))) {
    return true
  }
  return isWorthWaiting(error.cause, depth + 1)
}

const reasonOf = (error: unknown): string => {
  if (!(error instanceof Error)) return String(error)
  // A refused connection to several addresses arrives as an AggregateError without a message.
  const message =
    error.message !== '' || !(error instanceof AggregateError)
      ? error.message || error.name
      : error.errors.map((e: unknown) => (e instanceof Error ? e.message : String(e))).join('; ')
  return message.slice(0, 300)
}
