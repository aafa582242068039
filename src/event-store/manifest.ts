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
 * manifest's entries in payloads below this, otherwise the key alone (the publisher reads the
 * manifest).
 */
export const NOTICE_MAX_BYTES = 7_900

/**
 * Most payloads one commit is announced in (about 125 KB of entries, a group of 64 events of 1.4
 * KiB). A larger group is announced by its key alone: its publisher GETs the manifest, one request
 * for that many events.
 */
export const NOTICE_MAX_PARTS = 16

const utf8Bytes = (s: string): number =>
  // A UTF-16 unit is one to three UTF-8 bytes: only a string in between needs counting.
  s.length * 3 < NOTICE_MAX_BYTES ? s.length : Buffer.byteLength(s, 'utf8')

/**
 * A commit notice as strings for another process, all sent in one transaction: the manifest key,
 * then a newline and the entries as JSON, so the publisher there needs no GET.
 *   - `key\n[entries]` when they fit in one payload;
 *   - `key\n<i>/<n>\n[some entries]`, i = 1…n, when they fit in `maxParts` payloads (in order,
 *     each entry whole in one part; `createNoticeAssembler` puts them back together);
 *   - `key` alone otherwise (an entry too large for a payload, or too many parts).
 * A reader of the first form only (a publisher of an earlier release) reads a part as `key`.
 */
export const encodeCommitNotices = (
  manifestKey: string,
  entries: readonly ManifestEntry[],
  maxParts: number = NOTICE_MAX_PARTS,
): string[] => {
  let bodies = 0
  for (const e of entries) bodies += e.body.length
  // The bodies alone are a lower bound of the bytes: a group that cannot fit is not serialised.
  if (bodies >= NOTICE_MAX_BYTES * Math.max(1, maxParts)) return [manifestKey]
  const json = entries.map((e) => JSON.stringify(e))
  if (bodies < NOTICE_MAX_BYTES) {
    const whole = `${manifestKey}\n[${json.join(',')}]`
    if (utf8Bytes(whole) < NOTICE_MAX_BYTES) return [whole]
  }
  if (maxParts < 2 || entries.length < 2) return [manifestKey]
  // Room per part: the key, two newlines, `iii/nnn` and the brackets.
  const room = NOTICE_MAX_BYTES - Buffer.byteLength(manifestKey, 'utf8') - 12
  const groups: string[][] = []
  let current: string[] = []
  let used = 0
  for (const one of json) {
    const size = Buffer.byteLength(one, 'utf8') + 1
    if (size >= room) return [manifestKey]
    if (used + size >= room) {
      groups.push(current)
      if (groups.length >= maxParts) return [manifestKey]
      current = []
      used = 0
    }
    current.push(one)
    used += size
  }
  groups.push(current)
  const n = groups.length
  return groups.map((g, i) => `${manifestKey}\n${i + 1}/${n}\n[${g.join(',')}]`)
}

/** The single-payload form of `encodeCommitNotices` (the entries, or the key alone). */
export const encodeCommitNotice = (
  manifestKey: string,
  entries: readonly ManifestEntry[],
): string => encodeCommitNotices(manifestKey, entries, 1)[0] ?? manifestKey

/** A commit notice as read from one payload. */
export type DecodedNotice = {
  readonly manifestKey: string
  /** The entries (of this part, for a part); absent when not carried or not readable. */
  readonly entries?: readonly ManifestEntry[]
  /** Part `index` of `count` (from 1), when the commit was announced in several payloads. */
  readonly part?: { readonly index: number; readonly count: number }
}

/** Reads one of `encodeCommitNotices`' strings; entries are absent when not carried or not readable. */
export const decodeCommitNotice = (payload: string): DecodedNotice => {
  const cut = payload.indexOf('\n')
  if (cut < 0) return { manifestKey: payload }
  const manifestKey = payload.slice(0, cut)
  let rest = payload.slice(cut + 1)
  let part: { index: number; count: number } | undefined
  const head = /^(\d{1,3})\/(\d{1,3})\n/.exec(rest)
  if (head !== null) {
    const index = Number(head[1])
    const count = Number(head[2])
    if (index < 1 || index > count) return { manifestKey }
    part = { index, count }
    rest = rest.slice(head[0].length)
  }
  try {
    const entries: unknown = JSON.parse(rest)
    if (!Array.isArray(entries)) return { manifestKey }
    checkEntries(entries)
    return {
      manifestKey,
      entries: entries as ManifestEntry[],
      ...(part === undefined ? {} : { part }),
    }
  } catch {
    return { manifestKey }
  }
}

/** What a listener passes on: a commit with its entries, or its key alone (the manifest is read). */
export type AssembledNotice = {
  readonly manifestKey: string
  readonly entries?: readonly ManifestEntry[]
}

export type NoticeAssembler = {
  /**
   * One decoded payload, in the order received; returns the notices complete by now, in commit
   * order. A notice of one payload passes through. Parts are kept until the last one came; a
   * commit's payloads arrive together (PostgreSQL queues a transaction's notifications in one
   * go), so when anything else arrives first, the parts that did not come are taken as lost and
   * that commit is passed on by key, before what came.
   */
  take(notice: DecodedNotice): AssembledNotice[]
  /** The commits still waiting for parts, by key (the listener lost its session meanwhile). */
  flush(): AssembledNotice[]
}

export const createNoticeAssembler = (): NoticeAssembler => {
  let key: string | null = null
  let parts: (readonly ManifestEntry[] | undefined)[] = []
  let got = 0
  const flush = (): AssembledNotice[] => {
    if (key === null) return []
    const out = [{ manifestKey: key }]
    key = null
    parts = []
    got = 0
    return out
  }
  return {
    take(notice) {
      const p = notice.part
      if (p === undefined || notice.entries === undefined) {
        // Not a part, or an unreadable one: whatever was waiting will not be complete.
        if (notice.manifestKey === key) return flush()
        const plain: AssembledNotice =
          notice.entries === undefined
            ? { manifestKey: notice.manifestKey }
            : { manifestKey: notice.manifestKey, entries: notice.entries }
        return [...flush(), plain]
      }
      const out: AssembledNotice[] = []
      if (key !== notice.manifestKey || parts.length !== p.count) {
        out.push(...flush())
        key = notice.manifestKey
        parts = new Array<readonly ManifestEntry[] | undefined>(p.count)
      }
      if (parts[p.index - 1] === undefined) {
        parts[p.index - 1] = notice.entries
        got++
      }
      if (got === p.count) {
        const entries = parts.flatMap((x) => x ?? [])
        out.push({ manifestKey: notice.manifestKey, entries })
        key = null
        parts = []
        got = 0
      }
      return out
    },
    flush,
  }
}
