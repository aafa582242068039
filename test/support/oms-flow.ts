import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { CairnProblem } from '../../src/client/index.ts'
import type { Answer, CairnClient } from '../../src/client/index.ts'
import { listAll } from '../../src/core/ports/object-store.ts'
import type { ObjectStore } from '../../src/core/ports/object-store.ts'
import { BY_DATE_PREFIX } from '../../src/event-store/keys.ts'
import { parseSegment } from '../../src/event-store/segment.ts'

/** Envelopes stored in the bucket: the lines of every segment (a gap marker holds none). */
const countEvents = async (bucket: ObjectStore): Promise<number> => {
  let n = 0
  for await (const key of listAll(bucket, BY_DATE_PREFIX)) {
    const got = await bucket.get(key)
    if (got === null) continue
    const parsed = parseSegment(got.body)
    if (parsed.kind === 'segment') n += parsed.lines.length
  }
  return n
}

type Accepted = {
  readonly command_id: string
  readonly sequence_number: number
  readonly aggregate_id: string
  readonly aggregate_type: string
}

/** A command's 202: PENDING, with its id, status link and reserved sequence. */
const accepted = (r: Answer<unknown>): Accepted => {
  assert.equal(r.status, 202, JSON.stringify(r.body))
  const body = r.body as Accepted & { status: string; status_url: string }
  assert.equal(body.status, 'PENDING')
  assert.match(body.command_id, /^[0-9a-f-]{36}$/)
  assert.equal(body.status_url, `/api/v1/commands/${body.command_id}`)
  assert.equal(r.headers.get('location'), body.status_url)
  assert.equal(typeof body.sequence_number, 'number')
  return body
}

/** The problem details of a call that must fail with `status`. */
const refused = async (
  call: Promise<unknown>,
  status: number,
): Promise<CairnProblem['problem']> => {
  try {
    await call
  } catch (error) {
    if (!(error instanceof CairnProblem)) throw error
    assert.equal(error.status, status, error.message)
    return error.problem
  }
  return assert.fail(`the call succeeded; expected ${status}`)
}

/**
 * The whole OMS flow, through the typed client (`cairn/client`) against any deployment it
 * reaches: databases, classes and instances created, read back with `seq`, updated with the
 * right `expected_seq`, refused with a wrong one (409, nothing stored), idempotent by key,
 * history contiguous, validation failures ending FAILED with a reason and nothing applied.
 * Returns what it created.
 */
export const omsFlow = async (c: CairnClient, bucket: ObjectStore): Promise<{ db: string }> => {
  const db = `db-${randomUUID().slice(0, 8)}`
  const settle = async (a: Accepted) => c.waitForCommand(a.command_id, { timeoutMs: 30_000 })

  // A database, read back with its seq (command 1, DATABASE_CREATED 2).
  const createDb = accepted(await c.createDatabase({ body: { name: db, description: 'demo' } }))
  assert.equal(createDb.sequence_number, 1)
  assert.equal((await settle(createDb)).status, 'COMPLETED')
  const database = await c.getDatabase({ params: { db } })
  assert.equal(database.body.name, db)
  assert.equal(database.body.description, 'demo')
  assert.equal(database.body.seq, 2)
  assert.equal(database.headers.get('etag'), '"2"')

  // A second create of the same database: 409 with the OCC fields.
  let p = await refused(c.createDatabase({ body: { name: db } }), 409)
  assert.equal(p['error'], 'optimistic_concurrency_conflict')
  assert.equal(p['actual_seq'], 2)

  // Classes: Product, and Order referencing Product.
  type ClassBody = Parameters<CairnClient['createClass']>[0]['body']
  const product: ClassBody = {
    id: 'Product',
    label: 'Product',
    properties: [
      { name: 'name', type: 'string', required: true },
      { name: 'price', type: 'number' },
      { name: 'stock', type: 'integer' },
      { name: 'active', type: 'boolean' },
      { name: 'released', type: 'datetime' },
    ],
  }
  const order: ClassBody = {
    id: 'Order',
    properties: [
      { name: 'product', type: 'reference', target_class: 'Product', required: true },
      { name: 'quantity', type: 'integer', required: true },
    ],
  }
  for (const cls of [product, order]) {
    const s = await settle(accepted(await c.createClass({ params: { db }, body: cls })))
    assert.equal(s.status, 'COMPLETED', JSON.stringify(s))
  }
  const productClass = await c.getClass({ params: { db, class_id: 'Product' } })
  assert.equal(productClass.body.seq, 2)
  assert.deepEqual(
    productClass.body.properties.map((x) => x.name),
    ['name', 'price', 'stock', 'active', 'released'],
  )
  const classes = await c.listClasses({ params: { db } })
  assert.deepEqual(classes.body.items.map((x) => x.id).sort(), ['Order', 'Product'])

  // Instances.
  const products = { db, class_id: 'Product' }
  const p1Path = { ...products, instance_id: 'p1' }
  const p1 = accepted(
    await c.createInstance({
      params: products,
      body: {
        id: 'p1',
        data: {
          name: 'Lamp',
          price: 19.5,
          stock: 3,
          active: true,
          released: '2026-01-02T03:04:05Z',
        },
      },
    }),
  )
  assert.equal(p1.aggregate_type, 'Instance')
  assert.equal(p1.aggregate_id, `${db}:Product:p1`)
  assert.equal((await settle(p1)).status, 'COMPLETED')
  const p2 = accepted(
    await c.createInstance({ params: products, body: { data: { name: 'Chair', price: 80 } } }),
  )
  assert.equal((await settle(p2)).status, 'COMPLETED')
  const p2Id = p2.aggregate_id.split(':')[2] as string
  let lamp = await c.getInstance({ params: p1Path })
  assert.equal(lamp.body.seq, 2)
  assert.equal(lamp.body.data['name'], 'Lamp')
  assert.equal(lamp.body.data['stock'], 3)

  // Update with the right expected_seq: 202, then the new state at seq 4.
  const up = accepted(
    await c.updateInstance({
      params: p1Path,
      query: { expected_seq: 2 },
      body: { data: { price: 21, stock: null } },
    }),
  )
  assert.equal(up.sequence_number, 3)
  assert.equal((await settle(up)).status, 'COMPLETED')
  lamp = await c.getInstance({ params: p1Path })
  assert.equal(lamp.body.seq, 4)
  assert.equal(lamp.body.data['price'], 21)
  assert.equal(lamp.body.data['name'], 'Lamp')
  assert.equal('stock' in lamp.body.data, false, 'null in a merge patch removes the property')

  // Seed check 5: UPDATE and DELETE with a wrong expected_seq → 409, nothing stored.
  const before = await countEvents(bucket)
  assert.ok(before >= 8, `${before} events stored so far are counted`)
  p = await refused(
    c.updateInstance({ params: p1Path, query: { expected_seq: 2 }, body: { data: { price: 1 } } }),
    409,
  )
  assert.equal(p['error'], 'optimistic_concurrency_conflict')
  assert.equal(p['aggregate_id'], `${db}:Product:p1`)
  assert.equal(p['expected_seq'], 2)
  assert.equal(p['actual_seq'], 4)
  p = await refused(c.deleteInstance({ params: p1Path, ifMatch: 3 }), 409)
  assert.equal(p['expected_seq'], 3)
  assert.equal(p['actual_seq'], 4)
  await refused(c.deleteDatabase({ params: { db }, query: { expected_seq: 1 } }), 409)
  assert.equal(await countEvents(bucket), before, 'a refused command stores nothing')

  // An update without expected_seq is refused before anything is stored.
  await refused(c.updateInstance({ params: p1Path, body: { data: { price: 1 } } }), 428)

  // Duplicate Idempotency-Key: the same command, one event.
  const orders = { db, class_id: 'Order' }
  const key = `order-${randomUUID()}`
  const o1Body = { id: 'o1', data: { product: 'p1', quantity: 2 } }
  const o1 = accepted(await c.createInstance({ params: orders, body: o1Body, idempotencyKey: key }))
  const o1Again = accepted(
    await c.createInstance({ params: orders, body: o1Body, idempotencyKey: key }),
  )
  assert.equal(o1Again.command_id, o1.command_id)
  assert.equal(o1Again.sequence_number, o1.sequence_number)
  assert.equal((await settle(o1)).status, 'COMPLETED')
  const o1Replay = accepted(
    await c.createInstance({ params: orders, body: o1Body, idempotencyKey: key }),
  )
  assert.equal(o1Replay.command_id, o1.command_id, 'a late retry still gets the same command')
  p = await refused(
    c.createInstance({
      params: orders,
      body: { id: 'o1', data: { product: 'p1', quantity: 3 } },
      idempotencyKey: key,
    }),
    422,
  )
  assert.equal(p.code, 'idempotency_key_reused')

  // History: commands and domain events with contiguous sequences.
  const history = await c.getHistory({
    params: { aggregate_type: 'Instance', aggregate_id: `${db}:Product:p1` },
  })
  assert.deepEqual(
    history.body.events.map((e) => e.sequence_number),
    [1, 2, 3, 4],
  )
  assert.deepEqual(
    history.body.events.map((e) => e.event_type),
    [
      'CREATE_INSTANCE_REQUESTED',
      'INSTANCE_CREATED',
      'UPDATE_INSTANCE_REQUESTED',
      'INSTANCE_UPDATED',
    ],
  )
  assert.deepEqual(
    history.body.events.map((e) => e.metadata['kind']),
    ['command', 'domain', 'command', 'domain'],
  )
  const o1History = await c.getHistory({
    params: { aggregate_type: 'Instance', aggregate_id: `${db}:Order:o1` },
  })
  assert.equal(o1History.body.events.length, 2, 'the duplicate request appended nothing')

  // Validation failures end FAILED with a readable reason, and nothing is applied.
  const failures: [string, { id: string; data: Record<string, unknown> }, RegExp][] = [
    ['Product', { id: 'bad1', data: { price: 3 } }, /name/],
    ['Product', { id: 'bad2', data: { name: 'x', stock: 1.5 } }, /stock/],
    ['Product', { id: 'bad3', data: { name: 'x', colour: 'red' } }, /colour/],
    ['Nope', { id: 'bad4', data: {} }, /Nope|class/i],
    ['Order', { id: 'bad5', data: { product: 'ghost', quantity: 1 } }, /ghost|reference/i],
  ]
  for (const [classId, body, reason] of failures) {
    const params = { db, class_id: classId }
    const s = await settle(accepted(await c.createInstance({ params, body })))
    assert.equal(s.status, 'FAILED', JSON.stringify(s))
    assert.match(String(s.error?.message), reason, JSON.stringify(s))
    await refused(c.getInstance({ params: { ...params, instance_id: body.id } }), 404)
  }

  // Reads: paging and filters.
  const first = await c.listInstances({ params: products, query: { limit: 1 } })
  assert.equal(first.body.items.length, 1)
  assert.notEqual(first.body.next, null)
  const second = await c.listInstances({
    params: products,
    query: { limit: 1, after: first.body.next as string },
  })
  assert.equal(second.body.items.length, 1)
  assert.notEqual(second.body.items[0]?.id, first.body.items[0]?.id)
  const all = []
  for await (const item of c.pages('listInstances', { params: products, query: { limit: 1 } })) {
    all.push(item.id)
  }
  assert.deepEqual(all.sort(), ['p1', p2Id].sort(), 'pages() walks every page')
  const chairs = await c.listInstances({ params: products, filters: { name: 'Chair' } })
  assert.deepEqual(
    chairs.body.items.map((x) => x.id),
    [p2Id],
  )
  const priced = await c.listInstances({ params: products, filters: { price: 21 } })
  assert.deepEqual(
    priced.body.items.map((x) => x.id),
    ['p1'],
  )
  await refused(c.listInstances({ params: products, filters: { nope: 1 } }), 400)

  // Delete with the right expected_seq.
  const del = accepted(await c.deleteInstance({ params: p1Path, query: { expected_seq: 4 } }))
  assert.equal((await settle(del)).status, 'COMPLETED')
  await refused(c.getInstance({ params: p1Path }), 404)
  return { db }
}
