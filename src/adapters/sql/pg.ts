import { createHash } from 'node:crypto'
import pg from 'pg'
import { CairnError, ErrorCode, isCairnError } from '../../core/errors.ts'
import type { Row, Sql, SqlQueryable } from '../../core/ports/sql.ts'

export type PgSqlOptions = {
  readonly connectionString: string
  /** Pool size (default 10). */
  readonly max?: number
  readonly applicationName?: string
  /**
   * Parameterised statements are prepared once per connection and reused (default true): the
   * server parses and plans each of them once instead of at every call. Turn off behind a pooler
   * that cannot keep prepared statements (PgBouncer in transaction mode before 1.21).
   */
  readonly prepare?: boolean
  /**
   * Longest wait for a connection, new or free in the pool (default 10,000 ms): a server that
   * accepts connections but does not answer (hung) fails the call instead of holding it.
   */
  readonly connectTimeoutMs?: number
  /**
   * Longest wait for a statement's answer (default 30,000 ms; 0: none). The call then fails and
   * its connection is dropped (the server ends its session, and the locks it held, once it notices).
   */
  readonly queryTimeoutMs?: number
}

/** Distinct statement texts prepared by one adapter at most; others run unnamed. */
const MAX_PREPARED = 1_000

/** The SQL port on a PostgreSQL server through `pg`'s pool. */
export const createPgSql = (options: PgSqlOptions): Sql => {
  const connectTimeoutMs = options.connectTimeoutMs ?? 10_000
  const queryTimeoutMs = options.queryTimeoutMs ?? 30_000
  const clientConfig = {
    connectionString: options.connectionString,
    connectionTimeoutMillis: connectTimeoutMs,
    ...(queryTimeoutMs > 0 ? { query_timeout: queryTimeoutMs } : {}),
    // Notices a peer that vanished without closing (a host or network failure) on idle sockets.
    keepAlive: true,
  }
  const pool = new pg.Pool({
    ...clientConfig,
    max: options.max ?? 10,
    application_name: options.applicationName ?? 'cairn',
  })
  // An idle client that loses its server must not crash the process; the next query reconnects.
  pool.on('error', () => {})
  const what = `postgres ${redact(options.connectionString)}`

  const prepare = options.prepare ?? true
  /** Statement names by text (a hash: the same text gets the same name on every connection). */
  const names = new Map<string, string>()
  const nameOf = (text: string): string | undefined => {
    let name = names.get(text)
    if (name === undefined && names.size < MAX_PREPARED) {
      name = `cairn_${createHash('sha1').update(text).digest('hex').slice(0, 24)}`
      names.set(text, name)
    }
    return name
  }

  const queryOn =
    (client: pg.Pool | pg.PoolClient) =>
    async <R extends Row = Row>(text: string, params?: readonly unknown[]): Promise<R[]> => {
      const values = params as unknown[] | undefined
      const name = prepare && values !== undefined ? nameOf(text) : undefined
      try {
        if (name === undefined || values === undefined) {
          return (await client.query<R>(text, values)).rows
        }
        return (await client.query<R>({ name, text, values })).rows
      } catch (error) {
        throw asUnavailable(error, what)
      }
    }

  const execOn =
    (client: pg.Pool | pg.PoolClient) =>
    async (script: string): Promise<void> => {
      try {
        // Without parameters pg uses the simple protocol, which takes several statements.
        await client.query(script)
      } catch (error) {
        throw asUnavailable(error, what)
      }
    }

  const listeners = new Set<() => Promise<void>>()
  let closed: Promise<void> | undefined
  const close = (): Promise<void> =>
    (closed ??= Promise.allSettled([...listeners].map((stop) => stop())).then(() => pool.end()))

  /**
   * A dedicated connection that LISTENs. After a loss it connects again, 1 s after each failed
   * attempt (each bounded by the connect and query timeouts), one attempt at a time, and says so
   * once it listens again. The first attempt's failure rejects and leaves nothing behind.
   */
  const listen = async (
    channel: string,
    onNotify: (payload: string) => void,
    onReconnect?: () => void,
  ): Promise<() => Promise<void>> => {
    if (!/^[a-z_][a-z0-9_]{0,62}$/.test(channel)) {
      throw new Error(`channel ${JSON.stringify(channel)} must be a lower-case identifier`)
    }
    let stopped = false
    /** The connection listening or being opened; a late event of an older one is ignored. */
    let current: pg.Client | undefined
    let retry: ReturnType<typeof setTimeout> | undefined
    const drop = (c: pg.Client): void => {
      c.removeAllListeners('notification')
      // Its 'error' listener stays: the end of a broken connection may still report one.
      void c.end().catch(() => {})
    }
    const again = (): void => {
      if (stopped || retry !== undefined) return
      retry = setTimeout(() => {
        retry = undefined
        if (!stopped) void attempt(true).catch(() => {})
      }, 1_000)
    }
    const attempt = async (reconnecting: boolean): Promise<void> => {
      const c = new pg.Client({
        ...clientConfig,
        application_name: `${options.applicationName ?? 'cairn'}-listen`,
      })
      current = c
      c.on('notification', (n) => {
        if (n.channel === channel) onNotify(n.payload ?? '')
      })
      c.on('error', () => {
        if (c !== current) return
        current = undefined
        drop(c)
        again()
      })
      try {
        await c.connect()
        await c.query(`LISTEN ${channel}`)
      } catch (error) {
        if (c === current) {
          current = undefined
          drop(c)
          if (reconnecting) again()
        }
        throw asUnavailable(error, what)
      }
      if (stopped || c !== current) return drop(c)
      // Notifications sent while it was away are lost: tell the caller.
      if (reconnecting) onReconnect?.()
    }
    await attempt(false)
    const stop = async () => {
      stopped = true
      clearTimeout(retry)
      listeners.delete(stop)
      const c = current
      current = undefined
      if (c !== undefined) {
        c.removeAllListeners('notification')
        await c.end().catch(() => {})
      }
    }
    listeners.add(stop)
    return stop
  }

  const connect = async (): Promise<pg.PoolClient> => {
    try {
      return await pool.connect()
    } catch (error) {
      throw asUnavailable(error, what)
    }
  }

  return {
    describe: what,
    query: queryOn(pool),
    exec: execOn(pool),
    async transaction<T>(fn: (tx: SqlQueryable) => Promise<T>): Promise<T> {
      const client = await connect()
      // A checked-out client whose connection breaks reports it as an 'error' event, also
      // between two statements: without a listener that event would crash the process.
      let lost: Error | undefined
      const onError = (error: Error): void => {
        lost ??= error
      }
      client.on('error', onError)
      try {
        await queryOn(client)('BEGIN')
        const result = await fn({ query: queryOn(client), exec: execOn(client) })
        await queryOn(client)('COMMIT')
        return result
      } catch (error) {
        if (lost === undefined && !connectionFailed(error)) {
          try {
            await client.query('ROLLBACK')
          } catch (rollback) {
            lost = rollback as Error
          }
        } else {
          lost ??= error as Error
        }
        // The connection broke: whatever the statement said, the transaction is gone with it.
        throw lost === undefined ? error : asUnavailable(error, what, true)
      } finally {
        // A broken connection leaves the pool; the server ends its session and its locks.
        client.release(lost)
        // A healthy client goes back to the pool, which listens for its errors while idle; a
        // broken one keeps this listener, so that a late report of its end crashes nothing.
        if (lost === undefined) client.removeListener('error', onError)
      }
    },
    listen,
    close,
    [Symbol.asyncDispose]: close,
  }
}

/** The connection string without its password, for logs. */
export const redact = (connectionString: string): string => {
  try {
    const url = new URL(connectionString)
    if (url.password !== '') url.password = '***'
    return url.toString()
  } catch {
    return '(unparsable connection string)'
  }
}

/** True when `error` or one of its causes is SQL_UNAVAILABLE: the connection cannot be used. */
const connectionFailed = (error: unknown): boolean => {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 8; depth++) {
    if (isCairnError(e, ErrorCode.SQL_UNAVAILABLE)) return true
    e = e.cause
  }
  return false
}

/** Messages of `pg` and `pg-pool` for a connection that broke, was refused or timed out. */
const CONNECTION_MESSAGE =
  /connection terminated|connection timeout|timeout exceeded when trying to connect|query read timeout|not queryable|connection error|socket|ECONN|EPIPE|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN/i

/** SQLSTATEs of a session the server ended or refused: shutdown, restart, crash, overload. */
const CONNECTION_SQLSTATE = /^(08...|57P0[1-3]|53300)$/

/**
 * A failure to reach the server, or a session it ended, as a retryable `SQL_UNAVAILABLE` (the
 * driver's error as its cause); other errors, the server's answers with their SQLSTATE, as they
 * are. `broken`: the error ended a transaction's connection, whatever it was.
 */
const asUnavailable = (error: unknown, what: string, broken = false): unknown => {
  if (isCairnError(error)) return error
  const code = (error as { code?: unknown }).code
  const message = error instanceof Error ? error.message : String(error)
  const serverAnswer = error instanceof pg.DatabaseError
  const lost = serverAnswer
    ? typeof code === 'string' && CONNECTION_SQLSTATE.test(code)
    : CONNECTION_MESSAGE.test(message) || (typeof code === 'string' && /^E[A-Z]+$/.test(code))
  if (!lost && !broken) return error
  return new CairnError(ErrorCode.SQL_UNAVAILABLE, `${what}: ${message}`, {
    retryable: true,
    cause: error,
    ...(typeof code === 'string' ? { details: { sqlstate: code } } : {}),
  })
}
