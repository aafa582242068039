import { createHash } from 'node:crypto'
import pg from 'pg'
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
}

/** Distinct statement texts prepared by one adapter at most; others run unnamed. */
const MAX_PREPARED = 1_000

/** The SQL port on a PostgreSQL server through `pg`'s pool. */
export const createPgSql = (options: PgSqlOptions): Sql => {
  const pool = new pg.Pool({
    connectionString: options.connectionString,
    max: options.max ?? 10,
    application_name: options.applicationName ?? 'cairn',
  })
  // An idle client that loses its server must not crash the process; the next query reconnects.
  pool.on('error', () => {})

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
      if (name === undefined || values === undefined) {
        return (await client.query<R>(text, values)).rows
      }
      return (await client.query<R>({ name, text, values })).rows
    }

  const execOn =
    (client: pg.Pool | pg.PoolClient) =>
    async (script: string): Promise<void> => {
      // Without parameters pg uses the simple protocol, which takes several statements.
      await client.query(script)
    }

  const listeners = new Set<() => Promise<void>>()
  let closed: Promise<void> | undefined
  const close = (): Promise<void> =>
    (closed ??= Promise.allSettled([...listeners].map((stop) => stop())).then(() => pool.end()))

  /** A dedicated connection that LISTENs, reconnecting after a loss (1 s apart). */
  const listen = async (
    channel: string,
    onNotify: (payload: string) => void,
    onReconnect?: () => void,
  ): Promise<() => Promise<void>> => {
    if (!/^[a-z_][a-z0-9_]{0,62}$/.test(channel)) {
      throw new Error(`channel ${JSON.stringify(channel)} must be a lower-case identifier`)
    }
    let stopped = false
    let client: pg.Client | undefined
    let retry: ReturnType<typeof setTimeout> | undefined
    const connect = async (): Promise<void> => {
      const c = new pg.Client({
        connectionString: options.connectionString,
        application_name: `${options.applicationName ?? 'cairn'}-listen`,
      })
      c.on('notification', (n) => {
        if (n.channel === channel) onNotify(n.payload ?? '')
      })
      c.on('error', () => {
        void c.end().catch(() => {})
        if (!stopped) retry = setTimeout(() => void connect().catch(() => {}), 1_000)
      })
      try {
        await c.connect()
        await c.query(`LISTEN ${channel}`)
        const again = client !== undefined
        client = c
        // Notifications sent while it was away are lost: tell the caller.
        if (again && !stopped) onReconnect?.()
      } catch (error) {
        void c.end().catch(() => {})
        if (!stopped) retry = setTimeout(() => void connect().catch(() => {}), 1_000)
        throw error
      }
    }
    await connect()
    const stop = async () => {
      stopped = true
      clearTimeout(retry)
      listeners.delete(stop)
      await client?.end().catch(() => {})
    }
    listeners.add(stop)
    return stop
  }

  return {
    describe: `postgres ${redact(options.connectionString)}`,
    query: queryOn(pool),
    exec: execOn(pool),
    async transaction<T>(fn: (tx: SqlQueryable) => Promise<T>): Promise<T> {
      const client = await pool.connect()
      let broken = false
      try {
        await client.query('BEGIN')
        const result = await fn({ query: queryOn(client), exec: execOn(client) })
        await client.query('COMMIT')
        return result
      } catch (error) {
        try {
          await client.query('ROLLBACK')
        } catch {
          broken = true
        }
        throw error
      } finally {
        client.release(broken)
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
