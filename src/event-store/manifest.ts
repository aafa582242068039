import type { StoredEnvelope } from '../core/envelope.ts'

/**
 * A by-date manifest: one object per group commit under `indexes/by-date/`, listing the events
 * that commit stored, with their exact stored bytes, so the publisher reads one object per batch.
 * An event may appear in more than one manifest (a retried append, a repair): readers dedup by id.
 */
export type ManifestEntry = {
  readonly key: string
  readonly event_id: string
  readonly event_type: string
  readonly aggregate_type: string
  readonly aggregate_id: string
  readonly sequence_number: number
  readonly kafka_topic: string | null
  readonly ordering_key: string | null
  /** The envelope exactly as stored (canonical JSON). */
  readonly body: string
  /**
   * Present and true when the aggregate's previous event was still in flight at reservation: the
   * publisher publishes this one only after that one (or once this manifest is settled).
   */
  readonly prev_pending?: true
  /** Trace context of the envelope, for the Kafka headers. */
  readonly traceparent?: string
  readonly tracestate?: string
}

export type Manifest = {
  readonly version: 1
  readonly writer: string
  readonly written_at: string
  readonly entries: readonly ManifestEntry[]
}

export const manifestEntry = (
  key: string,
  envelope: StoredEnvelope,
  body: string,
  prevPending = false,
): ManifestEntry => ({
  key,
  event_id: envelope.event_id,
  event_type: envelope.event_type,
  aggregate_type: envelope.aggregate_type,
  aggregate_id: envelope.aggregate_id,
  sequence_number: envelope.sequence_number,
  kafka_topic:
    typeof envelope.metadata.kafka_topic === 'string' ? envelope.metadata.kafka_topic : null,
  ordering_key:
    typeof envelope.metadata.ordering_key === 'string' ? envelope.metadata.ordering_key : null,
  body,
  ...(prevPending ? { prev_pending: true as const } : {}),
  ...(typeof envelope.metadata.traceparent === 'string'
    ? { traceparent: envelope.metadata.traceparent }
    : {}),
  ...(typeof envelope.metadata.tracestate === 'string'
    ? { tracestate: envelope.metadata.tracestate }
    : {}),
})

/** Parses a manifest; throws a TypeError naming what is wrong (callers count and skip it). */
export const parseManifest = (bytes: Uint8Array): Manifest => {
  const value = JSON.parse(new TextDecoder().decode(bytes)) as Partial<Manifest> | null
  if (value?.version !== 1 || !Array.isArray(value.entries)) {
    throw new TypeError('not a cairn manifest (version 1 with entries)')
  }
  checkEntries(value.entries)
  return value as Manifest
}

/** Throws a TypeError unless every entry has a key, an event id and a body. */
const checkEntries = (entries: readonly unknown[]): void => {
  for (const e of entries) {
    const entry = e as Partial<ManifestEntry> | null
    if (
      typeof entry?.key !== 'string' ||
      typeof entry.event_id !== 'string' ||
      typeof entry.body !== 'string'
    ) {
      throw new TypeError('manifest entry without key, event_id or body')
    }
  }
}

/**
 * PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; a commit notice carries its
 * manifest's entries only below this, otherwise the key alone (the publisher reads the manifest).
 */
export const NOTICE_MAX_BYTES = 7_900

/**
 * A commit notice as one string for another process: the manifest key, and when it fits, a
 * newline and the entries as JSON, so the publisher there needs no GET.
 */
export const encodeCommitNotice = (
  manifestKey: string,
  entries: readonly ManifestEntry[],
): string => {
  // A large group is announced by key without serialising it: its bodies alone are too long.
  let bodies = 0
  for (const e of entries) bodies += e.body.length
  if (bodies >= NOTICE_MAX_BYTES) return manifestKey
  const full = `${manifestKey}\n${JSON.stringify(entries)}`
  // A UTF-16 unit is one to three UTF-8 bytes: only a string in between needs encoding to measure.
  if (full.length >= NOTICE_MAX_BYTES) return manifestKey
  if (full.length * 3 < NOTICE_MAX_BYTES) return full
  return new TextEncoder().encode(full).length < NOTICE_MAX_BYTES ? full : manifestKey
}

/** Reads `encodeCommitNotice`'s string; entries are absent when not carried or not readable. */
export const decodeCommitNotice = (
  payload: string,
): { readonly manifestKey: string; readonly entries?: readonly ManifestEntry[] } => {
  const cut = payload.indexOf('\n')
  if (cut < 0) return { manifestKey: payload }
  const manifestKey = payload.slice(0, cut)
  try {
    const entries: unknown = JSON.parse(payload.slice(cut + 1))
    if (!Array.isArray(entries)) return { manifestKey }
    checkEntries(entries)
    return { manifestKey, entries: entries as ManifestEntry[] }
  } catch {
    return { manifestKey }
  }
}
