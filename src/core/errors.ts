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
  BUS_UNAVAILABLE: 'BUS_UNAVAILABLE',
  BUS_ERROR: 'BUS_ERROR',
  BUS_UNKNOWN_TOPIC: 'BUS_UNKNOWN_TOPIC',
  APPEND_FAILED: 'APPEND_FAILED',
  CLOSED: 'CLOSED',
  REGISTRY_UNAVAILABLE: 'REGISTRY_UNAVAILABLE',
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
