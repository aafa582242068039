import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { StoredEnvelope } from '../../src/core/envelope.ts'
import type { DomainCommand, Parsed } from '../../src/domain/commands.ts'
import {
  parseCreateClass,
  parseCreateDatabase,
  parseCreateInstance,
  parseDeleteClass,
  parseDeleteDatabase,
  parseDeleteInstance,
  parseUpdateClass,
  parseUpdateInstance,
} from '../../src/domain/commands.ts'
import {
  decide,
  foldClass,
  foldDatabase,
  foldInstance,
  liveClass,
  liveInstance,
  mergeData,
} from '../../src/domain/decide.ts'
import type { ClassState, Decision, World } from '../../src/domain/decide.ts'

const CMD = 'c0ffee00-0000-4000-8000-000000000001'

const ok = (p: Parsed<DomainCommand>): DomainCommand => {
  if (!p.ok) assert.fail(JSON.stringify(p.problems))
  return p.value
}

const ev = (
  event_type: string,
  sequence_number: number,
  data: Record<string, unknown>,
  kind: 'command' | 'domain' = 'domain',
): StoredEnvelope => ({
  event_id: `${event_type}-${sequence_number}`,
  event_type,
  aggregate_type: 'X',
  aggregate_id: 'x',
  sequence_number,
  occurred_at: '2026-01-01T00:00:00.000Z',
  actor: null,
  data,
  metadata: { kind },
  schema_version: '1',
})

const db = { name: 'sales', description: null, generation: 2 }

const companyClass: ClassState = {
  definition: {
    id: 'Company',
    label: null,
    description: null,
    properties: [{ name: 'name', type: 'string', required: true }],
  },
  generation: 2,
  db_generation: 2,
}

const productClass: ClassState = {
  definition: {
    id: 'Product',
    label: 'Product',
    description: null,
    properties: [
      { name: 'sku', type: 'string', required: true },
      { name: 'qty', type: 'integer', required: false },
      { name: 'price', type: 'number', required: false },
      { name: 'active', type: 'boolean', required: false },
      { name: 'since', type: 'datetime', required: false },
      { name: 'maker', type: 'reference', required: false, target_class: 'Company' },
    ],
  },
  generation: 4,
  db_generation: 2,
}

const expectRejected = (d: Decision, code: string, reason: RegExp, exists: boolean): void => {
  assert.equal(d.outcome, 'rejected', JSON.stringify(d))
  if (d.outcome !== 'rejected') return
  assert.equal(d.eventType, 'COMMAND_REJECTED')
  assert.equal(d.code, code)
  assert.match(d.reason, reason)
  assert.equal(d.data.aggregate_exists, exists)
  assert.equal(d.data.code, code)
  assert.equal(d.data.reason, d.reason)
  assert.equal(d.data.command_id, CMD)
}

const expectCompleted = (d: Decision, eventType: string): Record<string, unknown> => {
  assert.equal(d.outcome, 'completed', JSON.stringify(d))
  assert.equal(d.eventType, eventType)
  assert.equal(d.data.command_id, CMD)
  return d.data
}

test('databases: create once (generation = its event sequence), delete only if live', () => {
  const create = ok(parseCreateDatabase({ name: 'sales', description: 'd' }))
  const data = expectCompleted(
    decide(create, CMD, { nextSeq: 2, database: null }),
    'DATABASE_CREATED',
  )
  assert.deepEqual(data, {
    command_id: CMD,
    db_name: 'sales',
    name: 'sales',
    description: 'd',
    generation: 2,
  })
  expectRejected(
    decide(create, CMD, { nextSeq: 4, database: db }),
    'already_exists',
    /database "sales" already exists/,
    true,
  )
  const del = ok(parseDeleteDatabase('sales'))
  assert.equal(
    expectCompleted(decide(del, CMD, { nextSeq: 4, database: db }), 'DATABASE_DELETED').generation,
    2,
  )
  expectRejected(
    decide(del, CMD, { nextSeq: 4, database: null }),
    'not_found',
    /does not exist/,
    false,
  )
})

test('folds: the generation is the created event sequence; deletes clear; commands and rejections change nothing', () => {
  const dbEvents = [
    ev('CREATE_DATABASE_REQUESTED', 1, {}, 'command'),
    ev('DATABASE_CREATED', 2, { name: 'sales', description: null }),
    ev('DELETE_DATABASE_REQUESTED', 3, {}, 'command'),
    ev('DATABASE_DELETED', 4, {}),
    ev('CREATE_DATABASE_REQUESTED', 5, {}, 'command'),
    ev('DATABASE_CREATED', 6, { name: 'sales', description: 'again' }),
    ev('COMMAND_REJECTED', 8, { aggregate_exists: true }),
  ]
  assert.deepEqual(foldDatabase(dbEvents), { name: 'sales', description: 'again', generation: 6 })
  assert.equal(foldDatabase(dbEvents.slice(0, 4)), null)
  assert.equal(foldDatabase([ev('CREATE_DATABASE_REQUESTED', 1, {}, 'command')]), null)

  const classEvents = [
    ev('ONTOLOGY_CLASS_CREATED', 2, {
      class_id: 'Product',
      label: 'P',
      description: null,
      properties: [{ name: 'sku', type: 'string', required: true }],
      db_generation: 2,
    }),
    ev('ONTOLOGY_CLASS_UPDATED', 4, {
      class_id: 'Product',
      label: 'Product',
      description: 'x',
      properties: [],
      db_generation: 2,
    }),
  ]
  const cls = foldClass(classEvents)
  assert.deepEqual(cls, {
    definition: { id: 'Product', label: 'Product', description: 'x', properties: [] },
    generation: 2,
    db_generation: 2,
  })
  assert.equal(liveClass(cls, { ...db, generation: 2 }), cls)
  // The database was deleted and re-created: the class is gone with it.
  assert.equal(liveClass(cls, { ...db, generation: 6 }), null)
  assert.equal(liveClass(cls, null), null)

  const inst = foldInstance([
    ev('INSTANCE_CREATED', 2, { data: { sku: 'a' }, class_generation: 2, db_generation: 2 }),
    ev('INSTANCE_UPDATED', 4, { data: { sku: 'b' }, class_generation: 2, db_generation: 2 }),
  ])
  assert.deepEqual(inst?.data, { sku: 'b' })
  assert.equal(liveInstance(inst, cls), inst)
  assert.equal(liveInstance(inst, cls === null ? null : { ...cls, generation: 9 }), null)
  assert.equal(
    foldInstance([
      ev('INSTANCE_CREATED', 2, { data: {}, class_generation: 2 }),
      ev('INSTANCE_DELETED', 4, {}),
    ]),
    null,
  )
})

test('classes: need the live database; already_exists; references must name live classes of the db (or itself)', () => {
  const create = ok(
    parseCreateClass('sales', {
      id: 'Product',
      properties: [
        { name: 'maker', type: 'reference', target_class: 'Company' },
        { name: 'parent', type: 'reference', target_class: 'Product' },
      ],
    }),
  )
  expectRejected(
    decide(create, CMD, { nextSeq: 2, database: null }),
    'database_not_found',
    /database "sales" does not exist/,
    false,
  )
  expectRejected(
    decide(create, CMD, { nextSeq: 6, database: db, cls: productClass }),
    'already_exists',
    /class "Product" already exists/,
    true,
  )
  expectRejected(
    decide(create, CMD, { nextSeq: 2, database: db, cls: null, classes: new Map() }),
    'dangling_reference',
    /property "maker" refers to class "Company", which does not exist in database "sales"/,
    false,
  )
  const data = expectCompleted(
    decide(create, CMD, {
      nextSeq: 2,
      database: db,
      cls: null,
      classes: new Map([['Company', companyClass]]),
    }),
    'ONTOLOGY_CLASS_CREATED',
  )
  assert.equal(data.generation, 2)
  assert.equal(data.db_generation, 2)
  assert.equal(data.class_id, 'Product')
  assert.equal((data.properties as unknown[]).length, 2)

  const update = ok(parseUpdateClass('sales', 'Product', { label: 'Goods' }))
  expectRejected(
    decide(update, CMD, { nextSeq: 6, database: db, cls: null }),
    'not_found',
    /class "Product" does not exist/,
    false,
  )
  const updated = expectCompleted(
    decide(update, CMD, {
      nextSeq: 6,
      database: db,
      cls: productClass,
      classes: new Map([['Company', companyClass]]),
    }),
    'ONTOLOGY_CLASS_UPDATED',
  )
  assert.equal(updated.label, 'Goods')
  assert.deepEqual(updated.properties, productClass.definition.properties)
  assert.equal(updated.generation, 4)
  // An update that refers to a class that is gone is rejected; the class keeps existing.
  expectRejected(
    decide(update, CMD, { nextSeq: 6, database: db, cls: productClass, classes: new Map() }),
    'dangling_reference',
    /"Company"/,
    true,
  )
  const del = ok(parseDeleteClass('sales', 'Product'))
  expectCompleted(
    decide(del, CMD, { nextSeq: 6, database: db, cls: productClass }),
    'ONTOLOGY_CLASS_DELETED',
  )
  expectRejected(
    decide(del, CMD, { nextSeq: 6, database: db, cls: null }),
    'not_found',
    /Product/,
    false,
  )
})

const instWorld = (over: Partial<World> = {}): World => ({
  nextSeq: 2,
  database: db,
  cls: productClass,
  instance: null,
  classes: new Map([
    ['Product', productClass],
    ['Company', companyClass],
  ]),
  instances: new Set(['Company:acme']),
  ...over,
})

test('instance create: database, class, already_exists, and the data validated against the class', () => {
  const create = (data: Record<string, unknown>): DomainCommand =>
    ok(parseCreateInstance('sales', 'Product', { id: 'P-1', data }, CMD))
  const good = {
    sku: 'a',
    qty: 3,
    price: 2.5,
    active: true,
    since: '2026-01-31T12:00:00+01:00',
    maker: 'acme',
  }
  const data = expectCompleted(decide(create(good), CMD, instWorld()), 'INSTANCE_CREATED')
  assert.deepEqual(data, {
    command_id: CMD,
    db_name: 'sales',
    class_id: 'Product',
    instance_id: 'P-1',
    data: good,
    class_generation: 4,
    db_generation: 2,
  })
  expectRejected(
    decide(create(good), CMD, instWorld({ database: null, cls: null })),
    'database_not_found',
    /database "sales"/,
    false,
  )
  expectRejected(
    decide(create(good), CMD, instWorld({ cls: null })),
    'class_not_found',
    /class "Product" does not exist/,
    false,
  )
  expectRejected(
    decide(
      create(good),
      CMD,
      instWorld({ instance: { data: good, class_generation: 4, db_generation: 2 } }),
    ),
    'already_exists',
    /instance "P-1" of class "Product" already exists/,
    true,
  )
  expectRejected(
    decide(create({ qty: 1 }), CMD, instWorld()),
    'validation_failed',
    /missing required property "sku"/,
    false,
  )
  expectRejected(
    decide(create({ sku: 'a', qty: 1.5 }), CMD, instWorld()),
    'validation_failed',
    /property "qty" must be an integer \(got number 1.5\)/,
    false,
  )
  expectRejected(
    decide(create({ sku: 'a', qty: 2 ** 53 }), CMD, instWorld()),
    'validation_failed',
    /"qty" must be an integer/,
    false,
  )
  expectRejected(
    decide(create({ sku: 7 }), CMD, instWorld()),
    'validation_failed',
    /property "sku" must be a string \(got number 7\)/,
    false,
  )
  expectRejected(
    decide(create({ sku: 'a', active: 'yes' }), CMD, instWorld()),
    'validation_failed',
    /"active" must be a boolean/,
    false,
  )
  expectRejected(
    decide(create({ sku: 'a', since: '2026-01-31T12:00:00' }), CMD, instWorld()),
    'validation_failed',
    /"since" must be an ISO-8601 date-time with an offset/,
    false,
  )
  expectRejected(
    decide(create({ sku: 'a', colour: 'red' }), CMD, instWorld()),
    'validation_failed',
    /unknown property "colour" \(class "Product" has "sku", "qty"/,
    false,
  )
  expectRejected(
    decide(create({ sku: 'a', maker: 'nobody' }), CMD, instWorld()),
    'dangling_reference',
    /property "maker" refers to Company "nobody", which does not exist/,
    false,
  )
  expectRejected(
    decide(create({ sku: 'a', maker: 42 }), CMD, instWorld()),
    'validation_failed',
    /"maker" must be the id of a Company instance/,
    false,
  )
})

test('instance update is a merge patch validated as a whole; delete needs it live', () => {
  const existing = { data: { sku: 'a', qty: 1 }, class_generation: 4, db_generation: 2 }
  const update = (data: Record<string, unknown>): DomainCommand =>
    ok(parseUpdateInstance('sales', 'Product', 'P-1', { data }))
  const merged = expectCompleted(
    decide(update({ qty: null, price: 9 }), CMD, instWorld({ instance: existing })),
    'INSTANCE_UPDATED',
  )
  assert.deepEqual(merged.data, { price: 9, sku: 'a' })
  expectRejected(
    decide(update({ sku: null }), CMD, instWorld({ instance: existing })),
    'validation_failed',
    /missing required property "sku"/,
    true,
  )
  expectRejected(
    decide(update({ qty: 2 }), CMD, instWorld({ instance: null })),
    'not_found',
    /instance "P-1" of class "Product" does not exist/,
    false,
  )
  const del = ok(parseDeleteInstance('sales', 'Product', 'P-1'))
  expectCompleted(decide(del, CMD, instWorld({ instance: existing })), 'INSTANCE_DELETED')
  expectRejected(decide(del, CMD, instWorld({ instance: null })), 'not_found', /P-1/, false)
  expectRejected(
    decide(del, CMD, instWorld({ database: null, cls: null, instance: null })),
    'not_found',
    /P-1/,
    false,
  )
  assert.deepEqual(mergeData({ b: 1, a: 2 }, { a: null, c: { x: null } }), { b: 1, c: { x: null } })
})

test('generations: deleting and re-creating a database or class leaves the children behind', () => {
  // A class created under generation 2 of the database; the database was re-created at 6.
  const oldClass = foldClass([
    ev('ONTOLOGY_CLASS_CREATED', 2, { class_id: 'Product', properties: [], db_generation: 2 }),
  ])
  const newDb = { ...db, generation: 6 }
  const cls = liveClass(oldClass, newDb)
  assert.equal(cls, null)
  // So the class can be created again, and creating an instance of it meanwhile is rejected.
  const recreate = ok(parseCreateClass('sales', { id: 'Product', properties: [] }))
  const data = expectCompleted(
    decide(recreate, CMD, { nextSeq: 4, database: newDb, cls, classes: new Map() }),
    'ONTOLOGY_CLASS_CREATED',
  )
  assert.equal(data.db_generation, 6)
  assert.equal(data.generation, 4)
  expectRejected(
    decide(ok(parseCreateInstance('sales', 'Product', { id: 'P-1', data: {} }, CMD)), CMD, {
      nextSeq: 2,
      database: newDb,
      cls,
    }),
    'class_not_found',
    /Product/,
    false,
  )
  // An instance of the class's earlier generation is not live under the re-created class.
  const reborn = foldClass([
    ev('ONTOLOGY_CLASS_CREATED', 2, { class_id: 'Product', properties: [], db_generation: 2 }),
    ev('ONTOLOGY_CLASS_DELETED', 4, {}),
    ev('ONTOLOGY_CLASS_CREATED', 6, { class_id: 'Product', properties: [], db_generation: 2 }),
  ])
  const inst = foldInstance([ev('INSTANCE_CREATED', 2, { data: {}, class_generation: 2 })])
  assert.equal(liveInstance(inst, reborn), null)
  assert.equal(reborn?.generation, 6)
})
