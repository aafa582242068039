import assert from 'node:assert/strict'
import { test } from 'node:test'
import { canonicalJson, createEnvelope } from '../../src/core/envelope.ts'
import { backoffMs } from '../../src/worker/backoff.ts'
import { decodeEnvelope } from '../../src/worker/decode.ts'

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s)
const stored = {
  ...createEnvelope({
    event_type: 'X',
    aggregate_type: 'T',
    aggregate_id: 'a',
    metadata: { kind: 'domain' },
  }),
  sequence_number: 3,
}

test('a stored envelope decodes', () => {
  const d = decodeEnvelope(bytes(canonicalJson(stored)))
  assert.ok(d.ok)
  assert.equal(d.envelope.sequence_number, 3)
})

test('anything else is refused with a reason naming what is wrong', () => {
  const cases: [Uint8Array, RegExp][] = [
    [new Uint8Array([0xff, 0xfe]), /not UTF-8/],
    [bytes('{nope'), /not JSON/],
    [bytes(JSON.stringify({ message_type: 'X', payload: stored })), /legacy wrapper/],
    [bytes(JSON.stringify({ s3_reference: 'events/x.json' })), /s3_reference/],
    [bytes(JSON.stringify({ ...stored, event_id: '' })), /event_id/],
    [bytes(JSON.stringify({ ...stored, sequence_number: null })), /no sequence_number/],
    [bytes('[1,2]'), /not a valid EventEnvelope/],
  ]
  for (const [value, reason] of cases) {
    const d = decodeEnvelope(value)
    assert.ok(!d.ok)
    assert.match(d.reason, reason)
  }
})

test('backoff grows exponentially up to its cap, with jitter below the cap', () => {
  const top = () => 1
  assert.deepEqual(
    [1, 2, 3, 4].map((a) => backoffMs(a, { baseMs: 100, maxMs: 500, random: top })),
    [100, 200, 400, 500],
  )
  assert.equal(backoffMs(3, { baseMs: 100, random: () => 0 }), 0)
})
