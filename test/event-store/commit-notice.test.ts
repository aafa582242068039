import assert from 'node:assert/strict'
import { test } from 'node:test'
import {
  NOTICE_MAX_BYTES,
  decodeCommitNotice,
  encodeCommitNotice,
} from '../../src/event-store/manifest.ts'
import type { ManifestEntry } from '../../src/event-store/manifest.ts'

const entry = (i: number, body: string): ManifestEntry => ({
  key: `events/Thing/a/${String(i).padStart(20, '0')}.json`,
  event_id: `id-${i}`,
  event_type: 'Happened',
  aggregate_type: 'Thing',
  aggregate_id: 'a',
  sequence_number: i,
  kafka_topic: null,
  ordering_key: null,
  body,
  ...(i % 2 === 0 ? { prev_pending: true as const } : {}),
})

const KEY = 'indexes/by-date/2026/11/27/05/00000001764219600000000-w1-000001.json'

test('a commit notice carries its entries when they fit, and reads back equal', () => {
  const entries = [entry(1, '{"a":"ü → 😀"}'), entry(2, '{"b":2}')]
  const payload = encodeCommitNotice(KEY, entries)
  assert.ok(payload.startsWith(`${KEY}\n`))
  assert.deepEqual(decodeCommitNotice(payload), { manifestKey: KEY, entries })
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
  assert.deepEqual(decodeCommitNotice(KEY), { manifestKey: KEY })
  assert.deepEqual(decodeCommitNotice(`${KEY}\nnot json`), { manifestKey: KEY })
  assert.deepEqual(decodeCommitNotice(`${KEY}\n[{"key":1}]`), { manifestKey: KEY })
})
