/**
 * The object-store port: a flat key space of immutable-by-convention objects.
 *
 * Guarantees every adapter gives:
 * - `putIfAbsent` is atomic create-only: of any number of concurrent calls for one key exactly one
 *   returns `created`; the others return `exists`. A `created` object is durable.
 * - `putIfMatch` is a conditional overwrite (compare-and-swap on the version tag); with
 *   `ifMatch: null` it behaves as create-only. Used for the publisher checkpoint only.
 * - `get` returns the whole object and its version tag, or `null` if the key does not exist.
 * - `list` yields keys under a prefix in ascending order, strictly after `startAfter` when given.
 *   Servers differ where a sibling name extends another (`a-b` vs `a/…`: S3 orders by bytes,
 *   SeaweedFS by path segment), so the bucket layout only lists prefixes whose sibling names have
 *   fixed width, where both orders agree.
 * - Failures whose outcome is unknown (timeout, connection reset after the request was sent)
 *   throw a `CairnError` with `retryable: true`; callers resolve them by reading back.
 * Returned buffers belong to the caller.
 */
export type PutOutcome = 'created' | 'exists'

export type ConditionalPutResult =
  | { readonly outcome: 'written'; readonly etag: string }
  | { readonly outcome: 'precondition_failed' }

export type StoredObject = {
  readonly body: Uint8Array
  readonly etag: string
}

export type ListPage = {
  readonly keys: readonly string[]
  /** Present when more keys follow; pass it back as `startAfter`. */
  readonly next?: string
}

export type ListOptions = {
  readonly startAfter?: string
  /** Upper bound on keys returned in one page (adapters may return fewer). */
  readonly limit?: number
}

export type ObjectStore = {
  /** A short name for logs and errors, e.g. `s3://bucket` or `fs:/data`. */
  readonly describe: string
  putIfAbsent(key: string, body: Uint8Array, contentType?: string): Promise<PutOutcome>
  putIfMatch(
    key: string,
    body: Uint8Array,
    ifMatch: string | null,
    contentType?: string,
  ): Promise<ConditionalPutResult>
  get(key: string): Promise<StoredObject | null>
  list(prefix: string, options?: ListOptions): Promise<ListPage>
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

/** Iterates every key under `prefix` (ascending), page by page. */
export async function* listAll(
  store: ObjectStore,
  prefix: string,
  startAfter?: string,
): AsyncGenerator<string> {
  let after = startAfter
  for (;;) {
    const page = await store.list(prefix, after === undefined ? {} : { startAfter: after })
    yield* page.keys
    if (page.next === undefined) return
    after = page.next
  }
}
