import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import {
  escapeSegment,
  eventKey,
  segmentKey,
  segmentKeyFloor,
  parseSegmentKey,
  seqOfEventKey,
  streamPrefix,
} from '../../src/event-store/keys.ts'

test('escaped segments are safe: no slash, no dot segment, no control character, bounded length', () => {
  fc.assert(
    fc.property(fc.string({ minLength: 1, maxLength: 1200, unit: 'binary' }), (raw) => {
      const s = escapeSegment(raw)
      assert.ok(!s.includes('/'))
      assert.ok(!s.startsWith('.'))
      assert.ok(!/[\u0000-\u001f\u007f]/.test(s))
      assert.ok(s.length <= 160 + 65)
      assert.match(s, /^[A-Za-z0-9_.%~-]+$/)
    }),
  )
})

test('distinct ids give distinct segments (escaping is injective, long ids included)', () => {
  fc.assert(
    fc.property(
      fc.string({ minLength: 1, maxLength: 400 }),
      fc.string({ minLength: 1, maxLength: 400 }),
      (a, b) => {
        fc.pre(a !== b)
        assert.notEqual(escapeSegment(a), escapeSegment(b))
      },
    ),
  )
  assert.notEqual(escapeSegment('x'.repeat(1000)), escapeSegment(`${'x'.repeat(999)}y`))
  assert.notEqual(escapeSegment('%2F'), escapeSegment('/'))
  assert.throws(() => escapeSegment(''), /empty/)
})

test('event keys sort by sequence and parse back', () => {
  const k9 = eventKey('T', 'a', 9)
  const k10 = eventKey('T', 'a', 10)
  assert.ok(k9 < k10)
  assert.equal(seqOfEventKey(k10), 10)
  assert.ok(k9.startsWith(streamPrefix('T', 'a')))
  assert.ok(!eventKey('T', 'a/b', 1).startsWith(streamPrefix('T', 'a')))
})

test('manifest keys sort by time (µs), parse back, and the floor sorts before any key of that millisecond', () => {
  const us = Date.UTC(2026, 10, 26, 23, 59, 59, 999) * 1000 + 999
  const k = segmentKey(us, 'abc123', 42)
  assert.match(k, /^indexes\/by-date\/2026\/11\/26\/\d{16}-abc123-0000000042\.json$/)
  assert.deepEqual(parseSegmentKey(k), { us, writer: 'abc123', n: 42 })
  assert.ok(segmentKeyFloor(us) < k)
  assert.ok(k < segmentKey(us + 1, 'aaa', 0))
  assert.ok(segmentKey(us + 1, 'aaa', 0).startsWith('indexes/by-date/2026/11/27/'))
  assert.equal(parseSegmentKey('indexes/by-date/2026/11/26/garbage.json'), null)
})
