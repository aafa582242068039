import assert from 'node:assert/strict'
import { test } from 'node:test'
import fc from 'fast-check'
import { idempotencyHash, validateEnvelope } from '../../src/core/envelope.ts'
import {
  commandEnvelope,
  commandTarget,
  parseCreateClass,
  parseCreateDatabase,
  parseCreateInstance,
  parseDeleteClass,
  parseDeleteDatabase,
  parseDeleteInstance,
  parseUpdateClass,
  parseUpdateInstance,
} from '../../src/domain/commands.ts'
import type { DomainCommand, Parsed } from '../../src/domain/commands.ts'
import {
  AGGREGATE,
  HANDLERS,
  TOPICS,
  commandHandlerFor,
  instanceAggregateId,
  isInstanceId,
} from '../../src/domain/model.ts'

const CMD = '7d1e2c1e-0b43-4a57-9b4a-0c7d7f3c9a11'

const ok = (p: Parsed<DomainCommand>): DomainCommand => {
  if (!p.ok) assert.fail(`expected ok, got ${JSON.stringify(p.problems)}`)
  return p.value
}

const pointers = (p: Parsed<DomainCommand>): string[] => {
  if (p.ok) assert.fail(`expected problems, got ${JSON.stringify(p.value)}`)
  return p.problems.map((x) => x.pointer)
}

test('create database: name and optional description; unknown fields and bad names are problems', () => {
  assert.deepEqual(ok(parseCreateDatabase({ name: 'sales', description: 'Sales data' })), {
    type: 'CREATE_DATABASE',
    db: 'sales',
    payload: { name: 'sales', description: 'Sales data' },
  })
  assert.deepEqual(ok(parseCreateDatabase({ name: 'a' })), {
    type: 'CREATE_DATABASE',
    db: 'a',
    payload: { name: 'a', description: null },
  })
  assert.deepEqual(pointers(parseCreateDatabase({ name: 'Sales', extra: 1 })), ['/name', '/extra'])
  assert.deepEqual(pointers(parseCreateDatabase({ name: 'x:y' })), ['/name'])
  assert.deepEqual(pointers(parseCreateDatabase({ name: 'a'.repeat(64) })), ['/name'])
  assert.deepEqual(pointers(parseCreateDatabase({ name: 'ok', description: 5 })), ['/description'])
  assert.deepEqual(pointers(parseCreateDatabase([])), [''])
  assert.deepEqual(pointers(parseCreateDatabase(null)), [''])
  assert.deepEqual(pointers(parseDeleteDatabase('Bad Name')), ['#/path/db'])
  assert.deepEqual(ok(parseDeleteDatabase('sales')), { type: 'DELETE_DATABASE', db: 'sales' })
})

test('create class: properties with types, required, target_class iff reference, unique names', () => {
  const cmd = ok(
    parseCreateClass('sales', {
      id: 'Product',
      label: 'Product',
      properties: [
        { name: 'sku', type: 'string', required: true },
        { name: 'price', type: 'number', description: 'EUR' },
        { name: 'maker', type: 'reference', target_class: 'Company' },
      ],
    }),
  )
  assert.deepEqual(cmd, {
    type: 'CREATE_ONTOLOGY_CLASS',
    db: 'sales',
    classId: 'Product',
    payload: {
      id: 'Product',
      label: 'Product',
      description: null,
      properties: [
        { name: 'sku', type: 'string', required: true },
        { name: 'price', type: 'number', required: false, description: 'EUR' },
        { name: 'maker', type: 'reference', required: false, target_class: 'Company' },
      ],
    },
  })
  const bad = parseCreateClass('sales', {
    id: '1abc',
    properties: [
      { name: 'a', type: 'text' },
      { name: 'a', type: 'string' },
      { name: 'r', type: 'reference' },
      { name: 's', type: 'string', target_class: 'X' },
      { name: 'q', type: 'integer', required: 'yes', color: 'red' },
      'nope',
      { name: 'has:colon', type: 'string' },
    ],
  })
  assert.deepEqual(pointers(bad), [
    '/id',
    '/properties/0/type',
    '/properties/2/target_class',
    '/properties/3/target_class',
    '/properties/4/required',
    '/properties/4/color',
    '/properties/5',
    '/properties/6/name',
  ])
  // A name given twice breaks no schema keyword: reported once the schema holds, as beyond it.
  const twice = parseCreateClass('sales', {
    id: 'A',
    properties: [
      { name: 'a', type: 'string' },
      { name: 'a', type: 'integer' },
    ],
  })
  assert.deepEqual(pointers(twice), ['/properties/1/name'])
  assert.equal(!twice.ok && twice.beyondSchema, true)
  assert.deepEqual(
    pointers(parseCreateClass('sales', { id: 'A', properties: new Array(257).fill(null) })),
    ['/properties'],
  )
  assert.deepEqual(pointers(parseCreateClass('Bad', { id: 'A', properties: [] })), ['#/path/db'])
  assert.equal(
    (
      ok(parseCreateClass('sales', { id: 'Empty' })) as unknown as {
        payload: { properties: unknown[] }
      }
    ).payload.properties.length,
    0,
  )
})

test('update class: a partial patch of label, description, properties; an empty patch is a problem', () => {
  assert.deepEqual(ok(parseUpdateClass('sales', 'Product', { label: null })), {
    type: 'UPDATE_ONTOLOGY_CLASS',
    db: 'sales',
    classId: 'Product',
    payload: { label: null },
  })
  assert.deepEqual(pointers(parseUpdateClass('sales', 'Product', {})), [''])
  assert.deepEqual(pointers(parseUpdateClass('sales', 'Pro-duct', { id: 'X', label: 'x' })), [
    '#/path/class_id',
    '/id',
  ])
  assert.deepEqual(ok(parseDeleteClass('sales', 'Product')), {
    type: 'DELETE_ONTOLOGY_CLASS',
    db: 'sales',
    classId: 'Product',
  })
})

test('create instance: the id is given or derived from the command id, deterministically', () => {
  const given = ok(parseCreateInstance('sales', 'Product', { id: 'P-1', data: { sku: 'a' } }, CMD))
  assert.equal((given as { instanceId: string }).instanceId, 'P-1')
  const a = ok(parseCreateInstance('sales', 'Product', { data: { sku: 'a' } }, CMD))
  const b = ok(parseCreateInstance('sales', 'Product', { data: { sku: 'a' } }, CMD))
  const c = ok(
    parseCreateInstance('sales', 'Product', { data: { sku: 'a' } }, `${CMD.slice(0, -1)}2`),
  )
  assert.deepEqual(a, b)
  const idA = (a as { instanceId: string }).instanceId
  assert.ok(isInstanceId(idA) && idA.length >= 8, idA)
  assert.notEqual(idA, (c as { instanceId: string }).instanceId)
  assert.deepEqual(
    pointers(parseCreateInstance('sales', 'Product', { id: 'a:b', data: {} }, CMD)),
    ['/id'],
  )
  assert.deepEqual(pointers(parseCreateInstance('sales', 'Product', {}, CMD)), ['/data'])
  assert.deepEqual(
    pointers(parseCreateInstance('sales', 'Product', { data: { sku: null, 'bad key': 1 } }, CMD)),
    ['/data/sku', '/data/bad key'],
  )
  let deep: unknown = 1
  for (let i = 0; i < 40; i++) deep = [deep]
  assert.deepEqual(pointers(parseCreateInstance('sales', 'Product', { data: { x: deep } }, CMD)), [
    '/data',
  ])
  assert.deepEqual(
    pointers(parseCreateInstance('sales', 'Product', { data: { x: 'y'.repeat(300_000) } }, CMD)),
    ['/data'],
  )
  assert.deepEqual(
    pointers(parseCreateInstance('sales', 'Product', { data: { 'a/b~c': 1 } }, CMD)),
    ['/data/a~1b~0c'],
  )
})

test('update instance is a merge patch (null allowed); delete names the path problems', () => {
  assert.deepEqual(ok(parseUpdateInstance('sales', 'Product', 'P-1', { data: { price: null } })), {
    type: 'UPDATE_INSTANCE',
    db: 'sales',
    classId: 'Product',
    instanceId: 'P-1',
    payload: { data: { price: null } },
  })
  assert.deepEqual(pointers(parseUpdateInstance('sales', 'Product', 'P-1', { data: {} })), [
    '/data',
  ])
  assert.deepEqual(pointers(parseDeleteInstance('sales', 'Product', '.hidden')), [
    '#/path/instance_id',
  ])
})

test('targets and envelopes: aggregate ids, topics, handlers, deterministic command envelopes', () => {
  const cmd = ok(parseUpdateInstance('sales', 'Product', 'P-1', { data: { price: 3 } }))
  const target = commandTarget(cmd)
  assert.deepEqual(target, {
    aggregateType: AGGREGATE.instance,
    aggregateId: instanceAggregateId('sales', 'Product', 'P-1'),
    topic: TOPICS.instanceCommands,
  })
  assert.equal(target.aggregateId, 'sales:Product:P-1')
  assert.equal(commandHandlerFor(AGGREGATE.instance), HANDLERS.instance)
  assert.equal(commandHandlerFor(AGGREGATE.database), HANDLERS.ontology)
  assert.equal(commandHandlerFor(AGGREGATE.ontologyClass), HANDLERS.ontology)
  assert.equal(commandTarget(ok(parseDeleteDatabase('sales'))).topic, TOPICS.databaseCommands)
  assert.equal(commandTarget(ok(parseDeleteClass('sales', 'X'))).aggregateId, 'sales:X')

  const e1 = commandEnvelope(cmd, {
    commandId: CMD,
    expectedSeq: 4,
    actor: 'alice',
    correlationId: 'corr-1',
    traceparent: '00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb-01',
    now: () => 1_000,
  })
  const e2 = commandEnvelope(cmd, {
    commandId: CMD,
    expectedSeq: 4,
    actor: 'alice',
    correlationId: 'corr-1',
    now: () => 2_000,
  })
  assert.ok(validateEnvelope(e1).ok)
  assert.equal(e1.event_id, CMD)
  assert.equal(e1.event_type, 'UPDATE_INSTANCE_REQUESTED')
  assert.deepEqual(e1.data, {
    command_id: CMD,
    command_type: 'UPDATE_INSTANCE',
    expected_seq: 4,
    db_name: 'sales',
    class_id: 'Product',
    instance_id: 'P-1',
    payload: { data: { price: 3 } },
  })
  assert.deepEqual(e1.metadata, {
    kind: 'command',
    command_type: 'UPDATE_INSTANCE',
    command_id: CMD,
    kafka_topic: 'instance_commands',
    ordering_key: 'sales:Product:P-1',
    service: 'oms',
    correlation_id: 'corr-1',
    traceparent: '00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb-01',
  })
  assert.equal(idempotencyHash(e1), idempotencyHash(e2))
  const db = commandEnvelope(ok(parseDeleteDatabase('sales')), {
    commandId: CMD,
    expectedSeq: 2,
    actor: null,
  })
  assert.deepEqual(db.data, {
    command_id: CMD,
    command_type: 'DELETE_DATABASE',
    expected_seq: 2,
    db_name: 'sales',
    payload: {},
  })
})

test('every parser, any JSON body: never throws, and problems carry pointers', () => {
  const anyValue = fc.oneof(
    fc.jsonValue({ maxDepth: 4 }),
    fc.record({ name: fc.jsonValue({ maxDepth: 2 }), description: fc.jsonValue({ maxDepth: 2 }) }),
    fc.record({
      id: fc.jsonValue({ maxDepth: 1 }),
      data: fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 2 })),
    }),
    fc.record({
      id: fc.string(),
      properties: fc.array(
        fc.record({
          name: fc.string(),
          type: fc.constantFrom('string', 'integer', 'reference', 'x'),
          required: fc.jsonValue({ maxDepth: 0 }),
          target_class: fc.jsonValue({ maxDepth: 0 }),
        }),
        { maxLength: 5 },
      ),
    }),
  )
  const segment = fc.oneof(fc.string({ maxLength: 70 }), fc.constantFrom('sales', 'Product', 'P-1'))
  fc.assert(
    fc.property(anyValue, segment, segment, segment, fc.string(), (body, db, cls, inst, cmdId) => {
      const all = [
        parseCreateDatabase(body),
        parseDeleteDatabase(db),
        parseCreateClass(db, body),
        parseUpdateClass(db, cls, body),
        parseDeleteClass(db, cls),
        parseCreateInstance(db, cls, body, cmdId),
        parseUpdateInstance(db, cls, inst, body),
        parseDeleteInstance(db, cls, inst),
      ]
      for (const p of all) {
        if (p.ok) {
          const target = commandTarget(p.value)
          assert.ok(target.aggregateId.length > 0)
          const env = commandEnvelope(p.value, { commandId: CMD, expectedSeq: 0, actor: null })
          assert.ok(validateEnvelope(env).ok)
        } else {
          assert.ok(p.problems.length > 0)
          for (const pr of p.problems) {
            assert.equal(typeof pr.pointer, 'string')
            assert.ok(
              pr.pointer === '' || pr.pointer.startsWith('/') || pr.pointer.startsWith('#/'),
            )
            assert.ok(pr.message.length > 0)
          }
        }
      }
    }),
    { numRuns: 400 },
  )
})
