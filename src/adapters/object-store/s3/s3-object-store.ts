import { CairnError, ErrorCode } from '../../../core/errors.ts'
import type {
  ConditionalPutResult,
  ListPage,
  ObjectStore,
  PutOutcome,
  StoredObject,
} from '../../../core/ports/object-store.ts'
import { createS3Client, parseListObjects, s3ErrorCode } from './s3-client.ts'
import type { S3Client, S3ClientOptions, S3Response } from './s3-client.ts'

export type S3ObjectStoreOptions = S3ClientOptions & {
  readonly bucket: string
  /** Create the bucket when it is missing (default true). */
  readonly createBucket?: boolean
}

/** Objects in one bucket of any S3-compatible server (AWS S3, MinIO, SeaweedFS…). */
export type S3ObjectStore = ObjectStore & {
  readonly bucket: string
  /** The underlying client, for tooling and tests (cleanup); cairn never deletes events. */
  readonly client: S3Client
}

export const createS3ObjectStore = async (
  options: S3ObjectStoreOptions,
): Promise<S3ObjectStore> => {
  const client = createS3Client(options)
  const bucket = options.bucket
  const describe = `s3://${bucket} at ${options.endpoint}`

  const fail = (what: string, res: S3Response): CairnError =>
    new CairnError(
      ErrorCode.OBJECT_STORE_ERROR,
      `${what} on ${describe} answered ${res.status} ${s3ErrorCode(res.body) ?? ''}`.trim(),
      // Throttling and server errors may succeed on a retry; other statuses will not.
      { retryable: res.status >= 500 || res.status === 429 || res.status === 409 },
    )

  if (options.createBucket ?? true) {
    const head = await client.request({ method: 'HEAD', bucket })
    if (head.status === 404) {
      const made = await client.request({ method: 'PUT', bucket })
      const code = s3ErrorCode(made.body)
      if (
        made.status !== 200 &&
        code !== 'BucketAlreadyOwnedByYou' &&
        code !== 'BucketAlreadyExists'
      ) {
        throw fail(`CreateBucket ${bucket}`, made)
      }
    } else if (head.status !== 200) {
      throw fail(`HeadBucket ${bucket}`, head)
    }
  }

  const put = (
    key: string,
    body: Uint8Array,
    condition: Record<string, string>,
    contentType: string,
  ) =>
    client.request({
      method: 'PUT',
      bucket,
      key,
      body,
      headers: { 'content-type': contentType, ...condition },
    })

  let closed = false
  const close = async (): Promise<void> => {
    if (closed) return
    closed = true
    client.close()
    await Promise.resolve()
  }

  return {
    describe,
    bucket,
    client,
    async putIfAbsent(key, body, contentType = 'application/json'): Promise<PutOutcome> {
      const res = await put(key, body, { 'if-none-match': '*' }, contentType)
      if (res.status === 200) return 'created'
      if (res.status === 412) return 'exists'
      throw fail(`PUT ${key} (create-only)`, res)
    },
    async putIfMatch(
      key,
      body,
      ifMatch,
      contentType = 'application/json',
    ): Promise<ConditionalPutResult> {
      const condition = ifMatch === null ? { 'if-none-match': '*' } : { 'if-match': ifMatch }
      const res = await put(key, body, condition, contentType)
      if (res.status === 200) {
        const etag = res.headers.etag
        if (typeof etag !== 'string') throw fail(`PUT ${key} returned no ETag`, res)
        return { outcome: 'written', etag }
      }
      // 404 answers If-Match on a key that does not exist.
      if (res.status === 412 || res.status === 404) return { outcome: 'precondition_failed' }
      throw fail(`PUT ${key} (conditional)`, res)
    },
    async get(key): Promise<StoredObject | null> {
      const res = await client.request({ method: 'GET', bucket, key })
      if (res.status === 404) return null
      if (res.status !== 200) throw fail(`GET ${key}`, res)
      const etag = res.headers.etag
      return { body: res.body, etag: typeof etag === 'string' ? etag : '' }
    },
    async list(prefix, listOptions = {}): Promise<ListPage> {
      const limit = Math.min(listOptions.limit ?? 1000, 1000)
      const query: [string, string][] = [
        ['list-type', '2'],
        ['prefix', prefix],
        ['max-keys', String(limit)],
      ]
      if (listOptions.startAfter !== undefined) query.push(['start-after', listOptions.startAfter])
      const res = await client.request({ method: 'GET', bucket, query })
      if (res.status !== 200) throw fail(`LIST ${prefix}`, res)
      const { keys, truncated } = parseListObjects(res.body)
      const last = keys.at(-1)
      return truncated && last !== undefined ? { keys, next: last } : { keys }
    },
    close,
    [Symbol.asyncDispose]: close,
  }
}
