import type { ObjectStore } from '../../src/core/ports/object-store.ts'

export type RequestKind = 'put' | 'putIfMatch' | 'get' | 'list'
export type RequestCounts = Record<RequestKind, number>

export const zeroCounts = (): RequestCounts => ({ put: 0, putIfMatch: 0, get: 0, list: 0 })

export const diffCounts = (after: RequestCounts, before: RequestCounts): RequestCounts => ({
  put: after.put - before.put,
  putIfMatch: after.putIfMatch - before.putIfMatch,
  get: after.get - before.get,
  list: after.list - before.list,
})

/** An object store that counts the requests made through it, by kind (a decorator of the port). */
export type CountingStore = ObjectStore & {
  /** A copy of the counts so far. */
  counts(): RequestCounts
}

export const countingStore = (inner: ObjectStore): CountingStore => {
  const c = zeroCounts()
  return {
    describe: inner.describe,
    putIfAbsent(key, body, contentType) {
      c.put++
      return inner.putIfAbsent(key, body, contentType)
    },
    putIfMatch(key, body, ifMatch, contentType) {
      c.putIfMatch++
      return inner.putIfMatch(key, body, ifMatch, contentType)
    },
    get(key) {
      c.get++
      return inner.get(key)
    },
    list(prefix, options) {
      c.list++
      return inner.list(prefix, options)
    },
    counts: () => ({ ...c }),
    close: () => inner.close(),
    [Symbol.asyncDispose]: () => inner.close(),
  }
}
