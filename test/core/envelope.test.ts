import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import {
  canonicalJson,
  createEnvelope,
  domainEventId,
  idempotencyHash,
  uuidV5,
  validateEnvelope,
} from '../../src/core/envelope.ts'

const valid = () =>
  createEnvelope({
    event_id: 'cmd-1',
    event_type: 'CREATE_INSTANCE_REQUESTED',
    aggregate_type: 'Instance',
    aggregate_id: 'db:main:Product:P-1',
    data: { a: 1 },
    metadata: { kind: 'command', command_id: 'cmd-1' },
  })

test('a complete envelope validates and keeps its fields; +00:00 timestamps normalise to Z', () => {
  const v = validateEnvelope({ ...valid(), occurred_at: '2026-01-31T12:00:00+00:00' })
  assert.ok(v.ok)
  assert.equal(v.envelope.occurred_at, '2026-01-31T12:00:00.000Z')
  assert.equal(v.envelope.schema_version, '1')
  assert.equal(v.envelope.sequence_number, null)
})

test('every problem is reported at once, each naming its field', () => {
  const v = validateEnvelope({
    event_id: '',
    event_type: 'X',
    aggregate_type: 'T',
    aggregate_id: 'a',
    sequence_number: 0,
    occurred_at: '2026-01-31 12:00',
    actor: 5,
    data: [],
    metadata: { kind: 'event', s3_reference: 'x' },
    schema_version: '1',
    extra: true,
  })
  assert.ok(!v.ok)
  const text = v.errors.join('\n')
  for (const field of [
    'event_id',
    'sequence_number',
    'occurred_at',
    'actor',
    'data',
    'metadata.kind',
    'metadata.s3_reference',
    'extra',
  ]) {
    assert.match(text, new RegExp(`^${field.replace('.', '\\.')}:`, 'm'), `no message for ${field}`)
  }
  assert.deepEqual(validateEnvelope('nope'), {
    ok: false,
    errors: ['envelope: must be a JSON object'],
  })
})

test('canonical JSON sorts keys at every depth and is stable under key order', () => {
  assert.equal(
    canonicalJson({ b: 1, a: { d: [1, { f: 2, e: 1 }], c: null } }),
    '{"a":{"c":null,"d":[1,{"e":1,"f":2}]},"b":1}',
  )
  fc.assert(
    fc.property(fc.dictionary(fc.string(), fc.jsonValue()), (obj) => {
      const reversed = Object.fromEntries(Object.entries(obj).reverse())
      assert.equal(canonicalJson(reversed), canonicalJson(obj))
      assert.deepEqual(JSON.parse(canonicalJson(obj)), JSON.parse(JSON.stringify(obj)))
    }),
  )
  assert.throws(() => canonicalJson({ x: Number.NaN }), /NaN/)
})

test('UUIDv5 matches the RFC reference value; domain event ids are deterministic', () => {
  // Python: uuid.uuid5(uuid.NAMESPACE_URL, 'http://python.org/')
  assert.equal(uuidV5('http://python.org/'), '4c565f0d-3f5a-5890-b41b-20cf47701c5e')
  const a = domainEventId('cmd-1', 'INSTANCE_CREATED', 'db:main:P:1')
  assert.equal(a, domainEventId('cmd-1', 'INSTANCE_CREATED', 'db:main:P:1'))
  assert.notEqual(a, domainEventId('cmd-2', 'INSTANCE_CREATED', 'db:main:P:1'))
  assert.equal(a, uuidV5('spice:cmd-1:INSTANCE_CREATED:db:main:P:1'))
})

test('the idempotency hash ignores sequence, time and trace context, not the payload', () => {
  const e = valid()
  const retried = {
    ...e,
    sequence_number: 7,
    occurred_at: '2030-01-01T00:00:00.000Z',
    metadata: { ...e.metadata, traceparent: '00-abc-def-01', kafka_topic: 't' },
  }
  assert.equal(idempotencyHash(retried), idempotencyHash(e))
  assert.notEqual(idempotencyHash({ ...e, data: { a: 2 } }), idempotencyHash(e))
})
