/**
 * The SQL port: the few things cairn needs from PostgreSQL, identical on a server (`pg`) and
 * in-process (PGlite).
 *
 * - `query` runs one parameterised statement ($1, $2 …) and returns its rows.
 * - `transaction` runs `fn` in one transaction on one connection: committed if `fn` resolves,
 *   rolled back if it throws (the error is rethrown).
 * - `exec` runs a script of several statements without parameters (migrations).
 * - Errors carry PostgreSQL's SQLSTATE in `code` when the server gave one.
 * - A server that cannot be reached, ends the session (restart, crash) or does not answer within
 *   the adapter's timeouts fails the call with a retryable `CairnError` `SQL_UNAVAILABLE`; a
 *   transaction whose connection broke fails so too (rolled back by the server). Such a failure
 *   never crashes the process, and the next call connects again.
 */
export type Row = Record<string, unknown>

export type SqlQueryable = {
  query<R extends Row = Row>(text: string, params?: readonly unknown[]): Promise<R[]>
  /** Runs a script of several statements, without parameters. */
  exec(script: string): Promise<void>
}

export type Sql = SqlQueryable & {
  readonly describe: string
  /**
   * Calls `onNotify` for each NOTIFY on `channel` (a lower-case identifier), until the returned
   * function is called. Best effort: notifications sent while the listener reconnects are lost,
   * so callers use them to wake up early, never as the only signal; `onReconnect` is called each
   * time it listens again after a loss, so that callers know some may be missing. Absent where
   * unsupported.
   */
  listen?(
    channel: string,
    onNotify: (payload: string) => void,
    onReconnect?: () => void,
  ): Promise<() => Promise<void>>
  transaction<T>(fn: (tx: SqlQueryable) => Promise<T>): Promise<T>
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}
