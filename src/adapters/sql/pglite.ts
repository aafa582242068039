import { PGlite } from '@electric-sql/pglite'
import type { Row, Sql, SqlQueryable } from '../../core/ports/sql.ts'

export type PgliteSqlOptions = {
  /** Data directory; omit for an in-memory database. */
  readonly dataDir?: string
}

/**
 * The SQL port on PGlite, in-process (embedded mode). PGlite has one connection and queues
 * statements; a transaction holds it exclusively until it ends.
 */
export const createPgliteSql = async (options: PgliteSqlOptions = {}): Promise<Sql> => {
  const db = options.dataDir === undefined ? new PGlite() : new PGlite(options.dataDir)
  await db.waitReady

  const queryOn =
    (q: Pick<PGlite, 'query'>) =>
    async <R extends Row = Row>(text: string, params?: readonly unknown[]): Promise<R[]> => {
      const res = await q.query<R>(text, params as unknown[] | undefined)
      return res.rows
    }

  const execOn =
    (q: Pick<PGlite, 'exec'>) =>
    async (script: string): Promise<void> => {
      await q.exec(script)
    }

  let closed: Promise<void> | undefined
  const close = (): Promise<void> => (closed ??= db.close())

  return {
    describe: `pglite ${options.dataDir ?? '(memory)'}`,
    query: queryOn(db),
    exec: execOn(db),
    transaction<T>(fn: (tx: SqlQueryable) => Promise<T>): Promise<T> {
      return db.transaction((tx) => fn({ query: queryOn(tx), exec: execOn(tx) }))
    },
    close,
    [Symbol.asyncDispose]: close,
  }
}
