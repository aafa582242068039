import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'
import fc from 'fast-check'
import { canonicalJson, createEnvelope } from '../../src/core/envelope.ts'
import type { EnvelopeMetadata, StoredEnvelope } from '../../src/core/envelope.ts'
import type { GapMarker } from '../../src/event-store/gap.ts'
import { segmentKey } from '../../src/event-store/keys.ts'
import {
  SEGMENT_VERSION,
  encodeSegment,
  parseSegment,
  segmentEntries,
  segmentEntry,
} from '../../src/event-store/segment.ts'
import type { ParsedSegment, SegmentEntry } from '../../src/event-store/segment.ts'

const WRITER = '3f09a1c2d4'
const WRITTEN_AT = '2026-12-06T21:04:05.123Z'
const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** A command as the store keeps it: its sequence number set, its bytes canonical JSON. */
const stored = (
  aggregateId: string,
  seq: number,
  data: Record<string, unknown> = {},
  metadata: Partial<EnvelopeMetadata> = {},
): { envelope: StoredEnvelope; body: string } => {
  const id = randomUUID()
  const envelope: StoredEnvelope = {
    ...createEnvelope({
      event_id: id,
      event_type: 'CREATE_THING_REQUESTED',
      aggregate_type: 'Thing',
      aggregate_id: aggregateId,
      data,
      metadata: { kind: 'command', command_id: id, ...metadata },
    }),
    sequence_number: seq,
  }
  return { envelope, body: canonicalJson(envelope) }
}

const entryOf = (
  aggregateId: string,
  seq: number,
  data: Record<string, unknown> = {},
  metadata: Partial<EnvelopeMetadata> = {},
  prevPending = false,
): SegmentEntry => {
  const { envelope, body } = stored(aggregateId, seq, data, metadata)
  return segmentEntry(envelope, body, prevPending)
}

/** Bodies that a line-based format could get wrong: multi-byte text, escaped line breaks. */
const awkward = (): SegmentEntry[] => [
  entryOf('p1', 1, { name: 'Grüße → 東京', note: 'ü → 😀' }),
  entryOf('p1', 2, { text: 'line one\nline two\r\nthree\u2028four\u2029five' }, {}, true),
  entryOf('q/9 ü', 1, { emoji: '👩‍👩‍👧‍👦🏳️‍🌈', tab: '\t', nul: '\u0000', quote: '"\\' }),
  entryOf('p2', 7, {}, {}, true),
]

const segmentOf = (parsed: ParsedSegment): Extract<ParsedSegment, { kind: 'segment' }> => {
  assert.ok(parsed.kind === 'segment', 'a segment, not a gap marker')
  return parsed
}

test('a segment reads back with every line byte for byte, escaped newlines and emoji included', () => {
  const entries = awkward()
  const bytes = encodeSegment(WRITER, WRITTEN_AT, entries)
  const parsed = segmentOf(parseSegment(bytes))
  assert.deepEqual(
    parsed.lines,
    entries.map((e) => e.body),
  )
  // The object is exactly the header line and the bodies, each ended by a newline.
  const text = decoder.decode(bytes)
  const header = text.slice(0, text.indexOf('\n'))
  assert.equal(text, `${header}\n${entries.map((e) => `${e.body}\n`).join('')}`)
  assert.deepEqual(segmentEntries(parsed), entries)
  // Each line is the envelope as stored, not a re-serialisation.
  parsed.lines.forEach((line, i) => {
    assert.equal(line, canonicalJson(JSON.parse(line)))
    assert.deepEqual(JSON.parse(line), JSON.parse(entries[i]?.body ?? ''))
  })
})

test('any canonical body survives the round trip (property)', () => {
  const data = fc.dictionary(fc.string({ unit: 'binary' }), fc.jsonValue(), { maxKeys: 6 })
  fc.assert(
    fc.property(fc.array(fc.tuple(data, fc.boolean()), { maxLength: 8 }), (items) => {
      const entries = items.map(([d, pending], i) => entryOf('a', i + 1, d, {}, pending))
      const parsed = parseSegment(encodeSegment(WRITER, WRITTEN_AT, entries))
      assert.deepEqual(
        segmentOf(parsed).lines,
        entries.map((e) => e.body),
      )
      assert.deepEqual(segmentEntries(parsed), entries)
    }),
  )
})

test('the header counts the events and lists the lines whose predecessor was in flight', () => {
  const entries = awkward()
  const parsed = segmentOf(parseSegment(encodeSegment(WRITER, WRITTEN_AT, entries)))
  assert.deepEqual(parsed.header, {
    cairn_segment: SEGMENT_VERSION,
    writer: WRITER,
    written_at: WRITTEN_AT,
    events: 4,
    prev_pending: [1, 3],
  })
  // None pending: the field is left out.
  const calm = [entryOf('a', 1), entryOf('a', 2)]
  const header = segmentOf(parseSegment(encodeSegment(WRITER, WRITTEN_AT, calm))).header
  assert.equal(header.events, 2)
  assert.equal('prev_pending' in header, false)
  // An empty segment is a header alone.
  const empty = encodeSegment(WRITER, WRITTEN_AT, [])
  const parsedEmpty = segmentOf(parseSegment(empty))
  assert.equal(parsedEmpty.header.events, 0)
  assert.deepEqual(parsedEmpty.lines, [])
  assert.deepEqual(segmentEntries(parsedEmpty), [])
})

test('segment entries carry the routing fields of the envelope metadata and prev_pending', () => {
  const traceparent = `00-${'4bf92f3577b34da6'.repeat(2)}-00f067aa0ba902b7-01`
  const routed = stored(
    'order-1',
    3,
    { total: 12 },
    {
      kafka_topic: 'oms.commands',
      ordering_key: 'order-1',
      traceparent,
      tracestate: 'vendor=1',
    },
  )
  const plain = stored('order-2', 1)
  const bytes = encodeSegment(WRITER, WRITTEN_AT, [
    segmentEntry(plain.envelope, plain.body, true),
    segmentEntry(routed.envelope, routed.body),
  ])
  const [first, second] = segmentEntries(parseSegment(bytes))
  assert.deepEqual(first, {
    event_id: plain.envelope.event_id,
    event_type: 'CREATE_THING_REQUESTED',
    aggregate_type: 'Thing',
    aggregate_id: 'order-2',
    sequence_number: 1,
    kafka_topic: null,
    ordering_key: null,
    body: plain.body,
    prev_pending: true,
  })
  assert.deepEqual(second, {
    event_id: routed.envelope.event_id,
    event_type: 'CREATE_THING_REQUESTED',
    aggregate_type: 'Thing',
    aggregate_id: 'order-1',
    sequence_number: 3,
    kafka_topic: 'oms.commands',
    ordering_key: 'order-1',
    body: routed.body,
    traceparent,
    tracestate: 'vendor=1',
  })
})

test('a gap marker at a segment key parses as a gap, with no entries', () => {
  const key = segmentKey(Date.UTC(2026, 11, 6, 21, 4, 5) * 1000, WRITER, 3)
  const marker: GapMarker = {
    gap: true,
    segment: key,
    reason: 'reservation never confirmed (writer crashed or stalled)',
    marked_at: WRITTEN_AT,
  }
  // As the writers and the repair write it: canonical JSON, one line.
  const parsed = parseSegment(encoder.encode(canonicalJson(marker)))
  assert.deepEqual(parsed, { kind: 'gap', marker })
  assert.deepEqual(segmentEntries(parsed), [])
})

test('a header whose count does not match the lines is refused with a TypeError naming both', () => {
  const entries = [entryOf('a', 1), entryOf('a', 2)]
  const text = decoder.decode(encodeSegment(WRITER, WRITTEN_AT, entries))
  // A line lost (a truncated object).
  const truncated = text.slice(0, text.lastIndexOf('\n', text.length - 2) + 1)
  assert.throws(() => parseSegment(encoder.encode(truncated)), {
    name: 'TypeError',
    message: 'segment header says 2 events, it holds 1',
  })
  // A line too many.
  assert.throws(() => parseSegment(encoder.encode(`${text}${entries[0]?.body ?? ''}\n`)), {
    name: 'TypeError',
    message: 'segment header says 2 events, it holds 3',
  })
  // The header alone, cut before its newline.
  assert.throws(() => parseSegment(encoder.encode(text.slice(0, text.indexOf('\n')))), {
    name: 'TypeError',
    message: 'segment header says 2 events, it holds 0',
  })
})

test('JSON that is not a segment header (the retired manifest, another version) is refused with a TypeError', () => {
  for (const first of [
    // The per-group manifest of the retired per-event layout.
    '{"version":1,"entries":[]}',
    JSON.stringify({
      ...JSON.parse(decoder.decode(encodeSegment(WRITER, WRITTEN_AT, []))),
      cairn_segment: 2,
    }),
    '{"cairn_segment":1,"writer":"w","written_at":"x"}',
    '{"cairn_segment":1,"events":"1"}',
    'null',
    '[]',
    '42',
    '"a string"',
  ]) {
    assert.throws(
      () => parseSegment(encoder.encode(`${first}\n`)),
      {
        name: 'TypeError',
        message: `not a cairn segment (version ${SEGMENT_VERSION} header line)`,
      },
      first,
    )
  }
})

test('bytes that are not JSON are refused with a TypeError naming the segment', () => {
  for (const raw of ['not json', '', '{"cairn_segment":1,', '\n{"cairn_segment":1}']) {
    assert.throws(() => parseSegment(encoder.encode(raw)), { name: 'TypeError' }, raw)
    assert.throws(() => parseSegment(encoder.encode(raw)), /segment/, raw)
  }
})

test('a gap marker followed by more lines is refused', () => {
  const marker = JSON.stringify({ gap: true, segment: 'k', reason: 'r', marked_at: 'now' })
  assert.throws(() => parseSegment(encoder.encode(`${marker}\n{"x":1}\n`)), {
    name: 'TypeError',
  })
  assert.equal(parseSegment(encoder.encode(`${marker}\n`)).kind, 'gap')
})

test('a segment is JSON lines a person can read: the header first, then one envelope per line', () => {
  const entries = awkward()
  const text = decoder.decode(encodeSegment(WRITER, WRITTEN_AT, entries))
  assert.ok(text.endsWith('\n'))
  const lines = text.slice(0, -1).split('\n')
  assert.equal(lines.length, 1 + entries.length)
  const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>)
  assert.deepEqual(Object.keys(parsed[0] ?? {}), [
    'cairn_segment',
    'writer',
    'written_at',
    'events',
    'prev_pending',
  ])
  assert.deepEqual(
    parsed.slice(1).map((e) => [e.aggregate_id, e.sequence_number]),
    [
      ['p1', 1],
      ['p1', 2],
      ['q/9 ü', 1],
      ['p2', 7],
    ],
  )
  // Text stays text: unicode as UTF-8, not \u escapes; no control character on any line.
  assert.ok(text.includes('Grüße → 東京'))
  assert.ok(text.includes('👩‍👩‍👧‍👦'))
  for (const l of lines) assert.doesNotMatch(l, /[\u0000-\u001f\u007f]/)
})
