import { isCairnError } from '../core/errors.ts'
import type { ErrorCode } from '../core/errors.ts'

/**
 * Errors as RFC 9457 problem+json. `code` is stable and machine-readable; `status` mirrors the
 * HTTP status; extensions carry what a client needs to recover (the OCC conflict's sequences, the
 * invalid fields).
 */
export type Problem = {
  readonly status: number
  readonly code: string
  readonly title: string
  readonly detail?: string
  readonly [extension: string]: unknown
}

export type HttpResponse = {
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
  readonly body: string
  /**
   * A body that goes on after `body` (server-sent events): its chunks are sent as they come,
   * until it ends or `signal` aborts (the client went away, or the server closes).
   */
  readonly stream?: (signal: AbortSignal) => AsyncIterable<string>
}

export const PROBLEM_CONTENT_TYPE = 'application/problem+json'

export const problem = (p: Problem, headers: Record<string, string> = {}): HttpResponse => ({
  status: p.status,
  headers: { 'content-type': PROBLEM_CONTENT_TYPE, ...headers },
  body: JSON.stringify({ type: `urn:cairn:problem:${p.code}`, ...p }),
})

/** The one table from the error family's codes to HTTP statuses (STYLE: codes are not statuses). */
const STATUS_BY_CODE: Readonly<
  Partial<Record<ErrorCode, { status: number; title: string; code?: string }>>
> = {
  // On a submission, a reused Idempotency-Key that the stored-command check did not see yet (two
  // requests with one key at once): the same code as when it does.
  IDEMPOTENCY_MISMATCH: {
    status: 422,
    title: 'Idempotency key reused with a different request',
    code: 'idempotency_key_reused',
  },
  SEQUENCE_CONFLICT: { status: 409, title: 'Optimistic concurrency conflict' },
  INVALID_ENVELOPE: { status: 400, title: 'Invalid command' },
  OBJECT_STORE_UNAVAILABLE: { status: 503, title: 'Event store unavailable' },
  REGISTRY_UNAVAILABLE: { status: 503, title: 'Registry unavailable' },
  SQL_ERROR: { status: 503, title: 'Database unavailable' },
  SQL_UNAVAILABLE: { status: 503, title: 'Database unavailable' },
  BUS_UNAVAILABLE: { status: 503, title: 'Bus unavailable' },
  APPEND_FAILED: { status: 503, title: 'The command was not stored' },
  CLOSED: { status: 503, title: 'Shutting down' },
  REGISTRY_BEHIND_BUCKET: {
    status: 503,
    title: 'Appends refused: the registry is behind the bucket (run cairn reconcile)',
  },
  REGISTRY_RECONCILING: { status: 503, title: 'Appends paused while the registry is reconciled' },
}

/**
 * The response for an error thrown below the HTTP layer. An OCC conflict carries the seed's
 * fields (`error`, `aggregate_id`, `expected_seq`, `actual_seq`); unavailable dependencies are
 * 503 with Retry-After; anything unknown is a 500 whose details stay in the log.
 */
export const problemForError = (error: unknown, requestId: string): HttpResponse => {
  if (isCairnError(error)) {
    const mapped = STATUS_BY_CODE[error.code]
    if (error.code === 'SEQUENCE_CONFLICT') {
      const d = error.details
      return problem({
        status: 409,
        code: 'optimistic_concurrency_conflict',
        title: 'Optimistic concurrency conflict',
        detail: `expected_seq ${String(d['expected_seq'])} does not match the aggregate's current sequence ${String(d['actual_seq'])}; read it again and retry`,
        error: 'optimistic_concurrency_conflict',
        aggregate_type: d['aggregate_type'],
        aggregate_id: d['aggregate_id'],
        expected_seq: d['expected_seq'],
        actual_seq: d['actual_seq'],
        request_id: requestId,
      })
    }
    if (mapped !== undefined) {
      const unavailable = mapped.status === 503
      return problem(
        {
          status: mapped.status,
          code: mapped.code ?? error.code.toLowerCase(),
          title: mapped.title,
          detail: unavailable ? 'a dependency is unavailable; retry later' : error.message,
          request_id: requestId,
        },
        unavailable ? { 'retry-after': '1' } : {},
      )
    }
  }
  return problem({
    status: 500,
    code: 'internal_error',
    title: 'Internal error',
    detail: `the request failed unexpectedly; quote request_id ${requestId} when reporting it`,
    request_id: requestId,
  })
}
