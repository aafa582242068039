import { after, before, describe } from 'node:test'

/**
 * Runs one contract suite against every adapter of a port. Each adapter gets a fresh instance
 * for its suite and disposes of it afterwards.
 */
export type AdapterCase<T> = {
  readonly name: string
  create(): Promise<T & { close(): Promise<void> }>
  /** Extra cleanup after close (remove the test bucket, schema, directory…). */
  cleanup?(): Promise<void>
}

export const contractSuite = <T>(
  port: string,
  cases: readonly AdapterCase<T>[],
  suite: (subject: () => T) => void,
): void => {
  for (const c of cases) {
    void describe(`${port} contract on ${c.name}`, () => {
      let instance: (T & { close(): Promise<void> }) | undefined
      before(async () => {
        instance = await c.create()
      })
      after(async () => {
        await instance?.close()
        await c.cleanup?.()
      })
      suite(() => {
        if (instance === undefined) throw new Error(`${c.name} adapter was not created`)
        return instance
      })
    })
  }
}
