import assert from 'node:assert/strict'
import { test } from 'node:test'
import { resetTime } from '../../src/publisher/checkpoint.ts'

test('a reset time: an ISO-8601 time of a real day, from 1970, not in the future', () => {
  const now = Date.parse('2026-12-07T12:00:00Z')
  assert.deepEqual(resetTime('2026-12-07T10:00:00Z', now), {
    ms: Date.parse('2026-12-07T10:00:00Z'),
  })
  assert.deepEqual(resetTime('2026-12-07T12:00:00+01:00', now), {
    ms: Date.parse('2026-12-07T11:00:00Z'),
  })
  assert.deepEqual(resetTime('1970-01-01T00:00:00Z', now), { ms: 0 })
  // Other hosts' clocks run a little ahead: a few minutes are allowed.
  assert.deepEqual(resetTime('2026-12-07T12:04:00Z', now), {
    ms: Date.parse('2026-12-07T12:04:00Z'),
  })
  for (const [text, why] of [
    ['yesterday', /ISO-8601/],
    ['2026-12-07', /ISO-8601/],
    ['2026-13-01T00:00:00Z', /ISO-8601|calendar/],
    ['2026-02-29T00:00:00Z', /calendar/],
    ['2026-04-31T00:00:00Z', /calendar/],
    ['1969-12-31T23:59:59Z', /1970/],
    ['2026-12-07T12:06:00Z', /future/],
    ['9999-12-31T23:59:59Z', /future/],
  ] as const) {
    const got = resetTime(text, now)
    assert.ok('problem' in got, `${text} refused`)
    assert.match(got.problem, why, text)
  }
  assert.deepEqual(resetTime('2024-02-29T00:00:00Z', now), {
    ms: Date.parse('2024-02-29T00:00:00Z'),
  })
})
