import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import {
  BY_DATE_PREFIX,
  dayPrefix,
  parseSegmentKey,
  segmentKey,
  segmentKeyFloor,
} from '../../src/event-store/keys.ts'

// Microseconds from 2000 to 2200: four-digit years, sixteen-digit times.
const us = fc.integer({ min: Date.UTC(2000, 0, 1) * 1000, max: Date.UTC(2200, 0, 1) * 1000 })
const writer = fc.stringMatching(/^[a-z0-9]{1,12}$/)
const counter = fc.integer({ min: 0, max: 9_999_999_999 })

test('segment keys sort by time (µs), whatever their writer and counter', () => {
  fc.assert(
    fc.property(us, us, writer, writer, counter, counter, (a, b, wa, wb, na, nb) => {
      fc.pre(a < b)
      assert.ok(segmentKey(a, wa, na) < segmentKey(b, wb, nb))
    }),
  )
  // Across midnight and across the end of a year.
  const midnight = Date.UTC(2026, 11, 31, 0, 0, 0) * 1000
  assert.ok(segmentKey(midnight - 1, 'zzz', 9) < segmentKey(midnight, 'aaa', 0))
  const newYear = Date.UTC(2027, 0, 1) * 1000
  assert.ok(segmentKey(newYear - 1, 'zzz', 9) < segmentKey(newYear, 'aaa', 0))
})

test('segment keys parse back to their time, writer and counter', () => {
  fc.assert(
    fc.property(us, writer, counter, (t, w, n) => {
      assert.deepEqual(parseSegmentKey(segmentKey(t, w, n)), { us: t, writer: w, n })
    }),
  )
  const t = Date.UTC(2026, 10, 26, 23, 59, 59, 999) * 1000 + 999
  const k = segmentKey(t, 'abc123', 42)
  assert.equal(
    k,
    `indexes/by-date/2026/11/26/${String(t).padStart(16, '0')}-abc123-0000000042.ndjson`,
  )
})

test('the floor of a time sorts after every key of an earlier time and before every key of that time or later', () => {
  fc.assert(
    fc.property(us, writer, counter, fc.nat(10_000_000), (t, w, n, later) => {
      const floor = segmentKeyFloor(t)
      assert.ok(segmentKey(t - 1, w, n) < floor)
      assert.ok(floor < segmentKey(t, w, n))
      assert.ok(floor < segmentKey(t + later, w, n))
    }),
  )
})

test('a key lies under the day prefix of its time (UTC), the last microsecond of a day included', () => {
  const last = Date.UTC(2026, 10, 26, 23, 59, 59, 999) * 1000 + 999
  assert.equal(dayPrefix(last), `${BY_DATE_PREFIX}2026/11/26/`)
  assert.equal(dayPrefix(last + 1), `${BY_DATE_PREFIX}2026/11/27/`)
  assert.ok(segmentKey(last, 'w1', 0).startsWith(dayPrefix(last)))
  assert.ok(segmentKey(last + 1, 'w1', 0).startsWith(`${BY_DATE_PREFIX}2026/11/27/`))
  assert.ok(segmentKeyFloor(last).startsWith(dayPrefix(last)))
  fc.assert(
    fc.property(us, writer, counter, (t, w, n) => {
      const d = new Date(Math.floor(t / 1000)).toISOString().slice(0, 10).replaceAll('-', '/')
      assert.equal(dayPrefix(t), `${BY_DATE_PREFIX}${d}/`)
      assert.ok(segmentKey(t, w, n).startsWith(dayPrefix(t)))
    }),
  )
})

test('anything but a segment key parses to null: garbage, the retired layouts, keys elsewhere', () => {
  const t = Date.UTC(2026, 10, 26, 10, 0, 0) * 1000
  const k = segmentKey(t, 'abc123', 42)
  for (const key of [
    'indexes/by-date/2026/11/26/garbage.json',
    'indexes/by-date/2026/11/26/garbage.ndjson',
    // The retired per-group manifest of the per-event layout: same name, `.json`.
    k.replace(/\.ndjson$/, '.json'),
    // The retired per-event layout.
    'events/Thing/a/00000000000000000001.json',
    `events/Thing/a/${k.slice(BY_DATE_PREFIX.length)}`,
    'checkpoints/event_publisher.json',
    k.slice(BY_DATE_PREFIX.length),
    `${k}.tmp`,
    `x${k}`,
    k.replace('abc123', 'ABC123'),
    k.replace('abc123', 'abc-123'),
    k.replace('abc123', ''),
    k.replace('-0000000042.', '-42.'),
    segmentKeyFloor(t),
    '',
  ]) {
    assert.equal(parseSegmentKey(key), null, key)
  }
})
