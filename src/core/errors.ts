/**
 * The one error family of cairn. Codes are strings about the domain, never HTTP statuses;
 * `http/` maps them to statuses in one table.
 */
export const ErrorCode = {
  INVALID_ENVELOPE: 'INVALID_ENVELOPE',
  INVALID_CONFIG: 'INVALID_CONFIG',
  /** The database's schema was migrated by a newer cairn than this one. */
  SCHEMA_TOO_NEW: 'SCHEMA_TOO_NEW',
  SEQUENCE_CONFLICT: 'SEQUENCE_CONFLICT',
  IDEMPOTENCY_MISMATCH: 'IDEMPOTENCY_MISMATCH',
  OBJECT_EXISTS: 'OBJECT_EXISTS',
  OBJECT_STORE_UNAVAILABLE: 'OBJECT_STORE_UNAVAILABLE',
  OBJECT_STORE_ERROR: 'OBJECT_STORE_ERROR',
  BACKEND_NONCONFORMANT: 'BACKEND_NONCONFORMANT',
  SQL_ERROR: 'SQL_ERROR',
  SQL_UNAVAILABLE: 'SQL_UNAVAILABLE',
  BUS_UNAVAILABLE: 'BUS_UNAVAILABLE',
  BUS_ERROR: 'BUS_ERROR',
  BUS_UNKNOWN_TOPIC: 'BUS_UNKNOWN_TOPIC',
  APPEND_FAILED: 'APPEND_FAILED',
  CLOSED: 'CLOSED',
  REGISTRY_UNAVAILABLE: 'REGISTRY_UNAVAILABLE',
  /** The bucket holds segments the allocator does not know (PostgreSQL lost or restored). */
  REGISTRY_BEHIND_BUCKET: 'REGISTRY_BEHIND_BUCKET',
  /** `cairn reconcile` is rebuilding the allocator from the bucket; appends wait. */
  REGISTRY_RECONCILING: 'REGISTRY_RECONCILING',
  /** The bucket was written in a layout this cairn does not read. */
  BUCKET_LAYOUT_RETIRED: 'BUCKET_LAYOUT_RETIRED',
} as const

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode]

export type CairnErrorOptions = {
  readonly retryable?: boolean
  readonly cause?: unknown
  readonly details?: Readonly<Record<string, unknown>>
}

export class CairnError extends Error {
  readonly code: ErrorCode
  readonly retryable: boolean
  readonly details: Readonly<Record<string, unknown>>

  constructor(code: ErrorCode, message: string, options: CairnErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'CairnError'
    this.code = code
    this.retryable = options.retryable ?? false
    this.details = Object.freeze({ ...options.details })
  }
}

export const isCairnError = (error: unknown, code?: ErrorCode): error is CairnError =>
  error instanceof CairnError && (code === undefined || error.code === code)

/** Codes that say a dependency could not be reached or did not answer in time (an outage). */
const UNAVAILABLE_CODES: ReadonlySet<ErrorCode> = new Set([
  ErrorCode.OBJECT_STORE_UNAVAILABLE,
  ErrorCode.SQL_UNAVAILABLE,
  ErrorCode.BUS_UNAVAILABLE,
  ErrorCode.REGISTRY_UNAVAILABLE,
  ErrorCode.REGISTRY_RECONCILING,
  // Appends refused until an operator reconciles: waiting is the cure, not dead-lettering.
  ErrorCode.REGISTRY_BEHIND_BUCKET,
])

/**
 * True when `error`, or an error in its `cause` chain, is a retryable failure of a dependency
 * (unreachable, hung, answering 5xx) rather than of the work itself: waiting and trying again is
 * the cure, so a worker pauses instead of counting it against the event (C6).
 */
export const isDependencyOutage = (error: unknown): boolean => {
  for (let e: unknown = error, depth = 0; e !== undefined && depth < 8; depth++) {
    if (e instanceof CairnError) {
      if (UNAVAILABLE_CODES.has(e.code)) return true
      if (e.code === ErrorCode.OBJECT_STORE_ERROR && e.retryable) return true
    }
    e = e instanceof Error ? e.cause : undefined
  }
  return false
}
