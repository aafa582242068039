import { createHash, randomUUID } from 'node:crypto'

/**
 * The EventEnvelope: one immutable JSON object per command or domain event, stored in the bucket
 * and carried unchanged as the Kafka value (DESIGN.md section 2).
 */
export type EventKind = 'command' | 'domain'

export type EnvelopeMetadata = {
  readonly kind: EventKind
  readonly kafka_topic?: string
  readonly ordering_key?: string
  readonly command_id?: string
  readonly correlation_id?: string
  readonly traceparent?: string
  readonly tracestate?: string
  readonly [key: string]: unknown
}

export type EventEnvelope = {
  readonly event_id: string
  readonly event_type: string
  readonly aggregate_type: string
  readonly aggregate_id: string
  /** Assigned by the store at append time; null before. */
  readonly sequence_number: number | null
  /** ISO-8601 UTC, e.g. `2026-11-26T10:00:00.000Z`. */
  readonly occurred_at: string
  readonly actor: string | null
  readonly data: Readonly<Record<string, unknown>>
  readonly metadata: EnvelopeMetadata
  readonly schema_version: string
}

/** An envelope as stored: its sequence number is known. */
export type StoredEnvelope = EventEnvelope & { readonly sequence_number: number }

export const ENVELOPE_FIELDS = [
  'event_id',
  'event_type',
  'aggregate_type',
  'aggregate_id',
  'sequence_number',
  'occurred_at',
  'actor',
  'data',
  'metadata',
  'schema_version',
] as const

const MAX_ID_LENGTH = 1024
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|\+00:00)$/

export type EnvelopeValidation =
  | { readonly ok: true; readonly envelope: EventEnvelope }
  | { readonly ok: false; readonly errors: readonly string[] }

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v)

const hasControl = (s: string): boolean => {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x20 || c === 0x7f) return true
  }
  return false
}

/**
 * Checks an unknown value against the envelope's shape and reports every problem at once, each
 * message naming its field. Aggregate ids may hold any printable text (they never reach a key);
 * identifiers and types may not be empty.
 */
export const validateEnvelope = (input: unknown): EnvelopeValidation => {
  if (!isRecord(input)) return { ok: false, errors: ['envelope: must be a JSON object'] }
  const errors: string[] = []
  const text = (field: string, opts: { max?: number; printable?: boolean } = {}): void => {
    const v = input[field]
    if (typeof v !== 'string' || v.length === 0) {
      errors.push(`${field}: must be a non-empty string`)
    } else if (v.length > (opts.max ?? MAX_ID_LENGTH)) {
      errors.push(
        `${field}: must be at most ${opts.max ?? MAX_ID_LENGTH} characters (got ${v.length})`,
      )
    } else if (opts.printable === true && hasControl(v)) {
      errors.push(`${field}: must not contain control characters`)
    }
  }
  text('event_id', { max: 128, printable: true })
  text('event_type', { max: 256, printable: true })
  text('aggregate_type', { max: 256 })
  text('aggregate_id')
  const seq = input.sequence_number
  if (seq !== null && seq !== undefined && !(Number.isSafeInteger(seq) && (seq as number) >= 1)) {
    errors.push('sequence_number: must be null or an integer ≥ 1')
  }
  const at = input.occurred_at
  if (typeof at !== 'string' || !ISO_UTC.test(at) || Number.isNaN(Date.parse(at))) {
    errors.push('occurred_at: must be an ISO-8601 UTC timestamp, e.g. 2026-01-31T12:00:00.000Z')
  }
  if (input.actor !== null && input.actor !== undefined && typeof input.actor !== 'string') {
    errors.push('actor: must be a string or null')
  }
  if (!isRecord(input.data)) errors.push('data: must be a JSON object')
  const meta = input.metadata
  if (!isRecord(meta)) {
    errors.push('metadata: must be a JSON object')
  } else {
    if (meta.kind !== 'command' && meta.kind !== 'domain') {
      errors.push('metadata.kind: must be "command" or "domain"')
    }
    for (const f of [
      'kafka_topic',
      'ordering_key',
      'command_id',
      'correlation_id',
      'traceparent',
    ] as const) {
      if (meta[f] !== undefined && meta[f] !== null && typeof meta[f] !== 'string') {
        errors.push(`metadata.${f}: must be a string`)
      }
    }
    for (const legacy of ['s3_reference', 'storage_mode', 'message_type']) {
      if (legacy in meta) errors.push(`metadata.${legacy}: legacy wrapper fields are not accepted`)
    }
  }
  if (typeof input.schema_version !== 'string' || input.schema_version === '') {
    errors.push('schema_version: must be a non-empty string')
  }
  for (const key of Object.keys(input)) {
    if (!(ENVELOPE_FIELDS as readonly string[]).includes(key)) errors.push(`${key}: unknown field`)
  }
  if (errors.length > 0) return { ok: false, errors }
  return {
    ok: true,
    envelope: {
      event_id: input.event_id as string,
      event_type: input.event_type as string,
      aggregate_type: input.aggregate_type as string,
      aggregate_id: input.aggregate_id as string,
      sequence_number: (seq ?? null) as number | null,
      occurred_at: new Date(at as string).toISOString(),
      actor: (input.actor ?? null) as string | null,
      data: input.data as Record<string, unknown>,
      metadata: meta as EnvelopeMetadata,
      schema_version: input.schema_version as string,
    },
  }
}

/**
 * Canonical JSON: object keys sorted, no whitespace. The stored bytes of an envelope, so the same
 * envelope always serialises to the same bytes (hashes, comparisons, Kafka values).
 */
export const canonicalJson = (value: unknown): string => {
  if (value === null || typeof value !== 'object') {
    if (typeof value === 'number' && !Number.isFinite(value)) {
      throw new TypeError('canonical JSON has no representation for NaN or Infinity')
    }
    if (value === undefined)
      throw new TypeError('canonical JSON has no representation for undefined')
    return JSON.stringify(value)
  }
  if (Array.isArray(value))
    return `[${value.map((v: unknown) => canonicalJson(v === undefined ? null : v)).join(',')}]`
  const obj = value as Record<string, unknown>
  const parts: string[] = []
  for (const key of Object.keys(obj).sort()) {
    const v = obj[key]
    if (v === undefined) continue
    parts.push(`${JSON.stringify(key)}:${canonicalJson(v)}`)
  }
  return `{${parts.join(',')}}`
}

/** SHA-256 hex of canonical JSON. */
export const contentHash = (value: unknown): string =>
  createHash('sha256').update(canonicalJson(value)).digest('hex')

/** Metadata fields that may differ between a command and its retry (not part of its identity). */
const VOLATILE_METADATA = ['kafka_topic', 'traceparent', 'tracestate', 'baggage'] as const

/**
 * What "the same command" means for idempotency: the envelope without its sequence number,
 * its timestamp and the volatile metadata (a retried request gets a new trace and clock).
 */
export const idempotencyHash = (envelope: EventEnvelope): string => {
  const metadata: Record<string, unknown> = { ...envelope.metadata }
  for (const f of VOLATILE_METADATA) delete metadata[f]
  return contentHash({
    event_id: envelope.event_id,
    event_type: envelope.event_type,
    aggregate_type: envelope.aggregate_type,
    aggregate_id: envelope.aggregate_id,
    actor: envelope.actor,
    data: envelope.data,
    metadata,
    schema_version: envelope.schema_version,
  })
}

const NAMESPACE_URL = '6ba7b811-9dad-11d1-80b4-00c04fd430c8'

/** RFC 4122 UUID version 5 (SHA-1, name-based). */
export const uuidV5 = (name: string, namespace: string = NAMESPACE_URL): string => {
  const ns = Buffer.from(namespace.replace(/-/g, ''), 'hex')
  const hash = createHash('sha1').update(ns).update(name, 'utf8').digest()
  hash[6] = ((hash[6] ?? 0) & 0x0f) | 0x50
  hash[8] = ((hash[8] ?? 0) & 0x3f) | 0x80
  const hex = hash.subarray(0, 16).toString('hex')
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`
}

/**
 * The id of a domain event, derived from its command, type and aggregate, so a retried command
 * re-emits the same ids and the append no-ops (the original's formula, kept for compatibility).
 */
export const domainEventId = (commandId: string, eventType: string, aggregateId: string): string =>
  uuidV5(`spice:${commandId}:${eventType}:${aggregateId}`)

export type NewEnvelope = {
  readonly event_id?: string
  readonly event_type: string
  readonly aggregate_type: string
  readonly aggregate_id: string
  readonly occurred_at?: string
  readonly actor?: string | null
  readonly data?: Readonly<Record<string, unknown>>
  readonly metadata: EnvelopeMetadata
  readonly schema_version?: string
}

/** Fills an envelope's defaults: a random id, now, no actor, empty data, schema version "1". */
export const createEnvelope = (
  input: NewEnvelope,
  now: () => number = Date.now,
): EventEnvelope => ({
  event_id: input.event_id ?? randomUUID(),
  event_type: input.event_type,
  aggregate_type: input.aggregate_type,
  aggregate_id: input.aggregate_id,
  sequence_number: null,
  occurred_at: input.occurred_at ?? new Date(now()).toISOString(),
  actor: input.actor ?? null,
  data: input.data ?? {},
  metadata: input.metadata,
  schema_version: input.schema_version ?? '1',
})
