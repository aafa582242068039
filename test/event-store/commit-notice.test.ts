import assert from 'node:assert/strict'
import { test } from 'node:test'
import {
  NOTICE_MAX_BYTES,
  NOTICE_MAX_PARTS,
  createNoticeAssembler,
  decodeCommitNotice,
  encodeCommitNotice,
  encodeCommitNotices,
} from '../../src/event-store/segment.ts'
import type { AssembledNotice, SegmentEntry } from '../../src/event-store/segment.ts'
import { parseSegmentKey, segmentKey } from '../../src/event-store/keys.ts'

const entry = (i: number, body: string): SegmentEntry => ({
  event_id: `id-${i}`,
  event_type: 'Happened',
  aggregate_type: 'Thing',
  aggregate_id: 'a',
  sequence_number: i,
  kafka_topic: null,
  ordering_key: null,
  body,
  ...(i % 2 === 0 ? { prev_pending: true as const } : {}),
  ...(i % 3 === 0 ? { traceparent: `00-${'ab'.repeat(16)}-${'cd'.repeat(8)}-01` } : {}),
})

const AT_US = Date.UTC(2026, 10, 27, 5) * 1000
const KEY = segmentKey(AT_US, 'w1', 1)

test('a commit notice carries its entries when they fit, and reads back equal', () => {
  const entries = [entry(1, '{"a":"ü → 😀"}'), entry(2, '{"b":2}'), entry(3, '{"c":"x\\ny"}')]
  const payload = encodeCommitNotice(KEY, entries)
  assert.ok(payload.startsWith(`${KEY}\n`))
  assert.deepEqual(decodeCommitNotice(payload), { segmentKey: KEY, entries })
  const read = decodeCommitNotice(payload).segmentKey
  assert.deepEqual(parseSegmentKey(read), { us: AT_US, writer: 'w1', n: 1 })
})

test('a commit notice too large for NOTIFY is the key alone, measured in UTF-8 bytes', () => {
  // 2,000 four-byte characters: 4,000 UTF-16 units but 8,000 bytes.
  const wide = [entry(1, JSON.stringify({ s: '😀'.repeat(2_000) }))]
  assert.equal(encodeCommitNotice(KEY, wide), KEY)
  const many = Array.from({ length: 10 }, (_, i) =>
    entry(i, JSON.stringify({ p: 'x'.repeat(1_024) })),
  )
  assert.equal(encodeCommitNotice(KEY, many), KEY)
  const fits = encodeCommitNotice(KEY, many.slice(0, 4))
  assert.ok(new TextEncoder().encode(fits).length < NOTICE_MAX_BYTES)
  assert.equal(decodeCommitNotice(fits).entries?.length, 4)
})

test('a key-only or unreadable notice decodes to the key without entries', () => {
  assert.deepEqual(decodeCommitNotice(KEY), { segmentKey: KEY })
  assert.deepEqual(decodeCommitNotice(`${KEY}\nnot json`), { segmentKey: KEY })
  assert.deepEqual(decodeCommitNotice(`${KEY}\n[{"event_id":"x"}]`), { segmentKey: KEY })
  assert.deepEqual(decodeCommitNotice(`${KEY}\n[{"body":"{}"}]`), { segmentKey: KEY })
  assert.deepEqual(decodeCommitNotice(`${KEY}\n{}`), { segmentKey: KEY })
})

const bytes = (s: string): number => new TextEncoder().encode(s).length
const kib = (i: number, ch = 'x'): SegmentEntry => entry(i, JSON.stringify({ p: ch.repeat(1_024) }))
const KEY2 = segmentKey(AT_US + 1, 'w1', 2)

test('a group too large for one payload is announced in parts, each under the limit, that read back whole', () => {
  const small = [entry(1, '{"a":1}')]
  assert.deepEqual(encodeCommitNotices(KEY, small), [encodeCommitNotice(KEY, small)])
  // 64 events of 1 KiB with multi-byte characters: about 13 parts.
  const group = Array.from({ length: 64 }, (_, i) => kib(i, i % 3 === 0 ? 'é' : 'x'))
  const payloads = encodeCommitNotices(KEY, group)
  assert.ok(payloads.length > 1 && payloads.length <= NOTICE_MAX_PARTS, `${payloads.length} parts`)
  for (const p of payloads) assert.ok(bytes(p) < NOTICE_MAX_BYTES, `${bytes(p)} bytes`)
  const decoded = payloads.map(decodeCommitNotice)
  decoded.forEach((d, i) => {
    assert.equal(d.segmentKey, KEY)
    assert.deepEqual(d.part, { index: i + 1, count: payloads.length })
  })
  assert.deepEqual(
    decoded.flatMap((d) => d.entries ?? []),
    group,
  )
  const assembler = createNoticeAssembler()
  const out = decoded.flatMap((d) => assembler.take(d))
  assert.deepEqual(out, [{ segmentKey: KEY, entries: group }])
})

test('a group over the parts limit, or with an entry too large for a payload, is the key alone', () => {
  const many = Array.from({ length: 200 }, (_, i) => kib(i))
  assert.deepEqual(encodeCommitNotices(KEY, many), [KEY])
  assert.deepEqual(encodeCommitNotices(KEY, many.slice(0, 20), 2), [KEY])
  const wide = [kib(1), entry(2, JSON.stringify({ s: 'y'.repeat(8_000) })), kib(3)]
  assert.deepEqual(encodeCommitNotices(KEY, wide), [KEY])
})

test('the assembler passes whole notices through and puts parts back together in any order', () => {
  const group = Array.from({ length: 12 }, (_, i) => kib(i))
  const parts = encodeCommitNotices(KEY, group).map(decodeCommitNotice)
  assert.ok(parts.length >= 2)
  const assembler = createNoticeAssembler()
  const small = decodeCommitNotice(encodeCommitNotice(KEY2, [entry(1, '{}')]))
  assert.deepEqual(assembler.take(small), [small])
  assert.deepEqual(assembler.take({ segmentKey: KEY2 }), [{ segmentKey: KEY2 }])
  const out: AssembledNotice[] = []
  for (const p of [...parts].reverse()) out.push(...assembler.take(p))
  // A part delivered twice changes nothing.
  out.push(...assembler.take(parts[0] as (typeof parts)[number]))
  assert.equal(out.length, 1)
  assert.deepEqual(out[0], { segmentKey: KEY, entries: group })
})

test('a commit whose parts stop coming is passed on by key, before what came after it', () => {
  const group = Array.from({ length: 12 }, (_, i) => kib(i))
  const parts = encodeCommitNotices(KEY, group).map(decodeCommitNotice)
  const assembler = createNoticeAssembler()
  assert.deepEqual(assembler.take(parts[0] as (typeof parts)[number]), [])
  // Another commit's notice: the first one will not be complete.
  const next = decodeCommitNotice(encodeCommitNotice(KEY2, [entry(1, '{}')]))
  assert.deepEqual(assembler.take(next), [{ segmentKey: KEY }, next])
  // Parts of another commit while one waits: the same.
  const other = encodeCommitNotices(KEY2, group).map(decodeCommitNotice)
  assert.deepEqual(assembler.take(parts[0] as (typeof parts)[number]), [])
  assert.deepEqual(assembler.take(other[0] as (typeof other)[number]), [{ segmentKey: KEY }])
  // The listener lost its session: what waits is passed on by key, once.
  assert.deepEqual(assembler.flush(), [{ segmentKey: KEY2 }])
  assert.deepEqual(assembler.flush(), [])
  // An unreadable part of the waiting commit: by key.
  assert.deepEqual(assembler.take(parts[0] as (typeof parts)[number]), [])
  assert.deepEqual(assembler.take(decodeCommitNotice(`${KEY}\n2/${parts.length}\nnot json`)), [
    { segmentKey: KEY },
  ])
})

test('a part header out of range is read as the key alone', () => {
  assert.deepEqual(decodeCommitNotice(`${KEY}\n0/2\n[]`), { segmentKey: KEY })
  assert.deepEqual(decodeCommitNotice(`${KEY}\n3/2\n[]`), { segmentKey: KEY })
})
