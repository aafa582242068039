import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { listAll } from '../../src/core/ports/object-store.ts'
import type { ObjectStore } from '../../src/core/ports/object-store.ts'
import { BY_DATE_PREFIX } from '../../src/event-store/keys.ts'
import { parseSegment } from '../../src/event-store/segment.ts'
import type { OmsClient } from './oms-client.ts'

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

const accepted = (r: { status: number; text: string; json: Record<string, unknown> }) => {
  assert.equal(r.status, 202, r.text)
  assert.equal(r.json['status'], 'PENDING')
  assert.match(String(r.json['command_id']), /^[0-9a-f-]{36}$/)
  assert.equal(r.json['status_url'], `/api/v1/commands/${String(r.json['command_id'])}`)
  assert.equal(typeof r.json['sequence_number'], 'number')
  return r.json as {
    command_id: string
    sequence_number: number
    aggregate_id: string
    aggregate_type: string
  }
}

/**
 * The whole OMS flow of issue 6, against any deployment reachable through `c`: databases, classes
 * and instances created, read back with `seq`, updated with the right `expected_seq`, refused
 * with a wrong one (409, nothing stored), idempotent by key, history contiguous, validation
 * failures ending FAILED with a reason and nothing applied. Returns what it created.
 */
export const omsFlow = async (c: OmsClient, bucket: ObjectStore): Promise<{ db: string }> => {
  const db = `db-${randomUUID().slice(0, 8)}`

  // A database, read back with its seq (command 1, DATABASE_CREATED 2).
  const createDb = accepted(await c.post('/api/v1/databases', { name: db, description: 'demo' }))
  assert.equal(createDb.sequence_number, 1)
  assert.equal((await c.settle(createDb.command_id)).status, 'COMPLETED')
  let r = await c.get(`/api/v1/databases/${db}`)
  assert.equal(r.status, 200, r.text)
  assert.equal(r.json.name, db)
  assert.equal(r.json.description, 'demo')
  assert.equal(r.json.seq, 2)
  assert.equal(r.headers['etag'], '"2"')

  // A second create of the same database: 409 with the OCC fields.
  r = await c.post('/api/v1/databases', { name: db })
  assert.equal(r.status, 409, r.text)
  assert.equal(r.json.error, 'optimistic_concurrency_conflict')
  assert.equal(r.json.actual_seq, 2)

  // Classes: Product, and Order referencing Product.
  const product = {
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
  const order = {
    id: 'Order',
    properties: [
      { name: 'product', type: 'reference', target_class: 'Product', required: true },
      { name: 'quantity', type: 'integer', required: true },
    ],
  }
  for (const cls of [product, order]) {
    const a = accepted(await c.post(`/api/v1/databases/${db}/classes`, cls))
    const s = await c.settle(a.command_id)
    assert.equal(s.status, 'COMPLETED', JSON.stringify(s))
  }
  r = await c.get(`/api/v1/databases/${db}/classes/Product`)
  assert.equal(r.status, 200, r.text)
  assert.equal(r.json.seq, 2)
  assert.deepEqual(
    r.json.properties.map((p: { name: string }) => p.name),
    ['name', 'price', 'stock', 'active', 'released'],
  )
  r = await c.get(`/api/v1/databases/${db}/classes`)
  assert.deepEqual(r.json.items.map((x: { id: string }) => x.id).sort(), ['Order', 'Product'])

  // Instances.
  const base = `/api/v1/databases/${db}/classes/Product/instances`
  const p1 = accepted(
    await c.post(base, {
      id: 'p1',
      data: { name: 'Lamp', price: 19.5, stock: 3, active: true, released: '2026-01-02T03:04:05Z' },
    }),
  )
  assert.equal(p1.aggregate_type, 'Instance')
  assert.equal(p1.aggregate_id, `${db}:Product:p1`)
  assert.equal((await c.settle(p1.command_id)).status, 'COMPLETED')
  const p2 = accepted(await c.post(base, { data: { name: 'Chair', price: 80 } }))
  const p2Status = await c.settle(p2.command_id)
  assert.equal(p2Status.status, 'COMPLETED')
  const p2Id = p2.aggregate_id.split(':')[2] as string
  r = await c.get(`${base}/p1`)
  assert.equal(r.status, 200, r.text)
  assert.equal(r.json.seq, 2)
  assert.equal(r.json.data.name, 'Lamp')
  assert.equal(r.json.data.stock, 3)

  // Update with the right expected_seq: 202, then the new state at seq 4.
  const up = accepted(
    await c.put(`${base}/p1?expected_seq=2`, { data: { price: 21, stock: null } }),
  )
  assert.equal(up.sequence_number, 3)
  assert.equal((await c.settle(up.command_id)).status, 'COMPLETED')
  r = await c.get(`${base}/p1`)
  assert.equal(r.json.seq, 4)
  assert.equal(r.json.data.price, 21)
  assert.equal(r.json.data.name, 'Lamp')
  assert.equal('stock' in r.json.data, false, 'null in a merge patch removes the property')

  // Seed check 5: UPDATE and DELETE with a wrong expected_seq → 409, nothing stored.
  const before = await countEvents(bucket)
  assert.ok(before >= 8, `${before} events stored so far are counted`)
  r = await c.put(`${base}/p1?expected_seq=2`, { data: { price: 1 } })
  assert.equal(r.status, 409, r.text)
  assert.match(r.headers['content-type'] ?? '', /application\/problem\+json/)
  assert.equal(r.json.error, 'optimistic_concurrency_conflict')
  assert.equal(r.json.aggregate_id, `${db}:Product:p1`)
  assert.equal(r.json.expected_seq, 2)
  assert.equal(r.json.actual_seq, 4)
  r = await c.del(`${base}/p1`, { 'if-match': '"3"' })
  assert.equal(r.status, 409, r.text)
  assert.equal(r.json.expected_seq, 3)
  assert.equal(r.json.actual_seq, 4)
  r = await c.del(`/api/v1/databases/${db}?expected_seq=1`)
  assert.equal(r.status, 409, r.text)
  assert.equal(await countEvents(bucket), before, 'a refused command stores nothing')

  // An update without expected_seq is refused before anything is stored.
  r = await c.put(`${base}/p1`, { data: { price: 1 } })
  assert.equal(r.status, 428, r.text)

  // Duplicate Idempotency-Key: the same command, one event.
  const key = `order-${randomUUID()}`
  const o1 = accepted(
    await c.post(
      `/api/v1/databases/${db}/classes/Order/instances`,
      { id: 'o1', data: { product: 'p1', quantity: 2 } },
      { 'idempotency-key': key },
    ),
  )
  const o1Again = accepted(
    await c.post(
      `/api/v1/databases/${db}/classes/Order/instances`,
      { id: 'o1', data: { product: 'p1', quantity: 2 } },
      { 'idempotency-key': key },
    ),
  )
  assert.equal(o1Again.command_id, o1.command_id)
  assert.equal(o1Again.sequence_number, o1.sequence_number)
  assert.equal((await c.settle(o1.command_id)).status, 'COMPLETED')
  const o1Replay = accepted(
    await c.post(
      `/api/v1/databases/${db}/classes/Order/instances`,
      { id: 'o1', data: { product: 'p1', quantity: 2 } },
      { 'idempotency-key': key },
    ),
  )
  assert.equal(o1Replay.command_id, o1.command_id, 'a late retry still gets the same command')
  r = await c.post(
    `/api/v1/databases/${db}/classes/Order/instances`,
    { id: 'o1', data: { product: 'p1', quantity: 3 } },
    { 'idempotency-key': key },
  )
  assert.equal(r.status, 422, r.text)
  assert.equal(r.json.code, 'idempotency_key_reused')

  // History: commands and domain events with contiguous sequences.
  r = await c.get(`/api/v1/aggregates/Instance/${encodeURIComponent(`${db}:Product:p1`)}/events`)
  assert.equal(r.status, 200, r.text)
  const history = r.json.events as {
    sequence_number: number
    event_type: string
    metadata: { kind: string }
  }[]
  assert.deepEqual(
    history.map((e) => e.sequence_number),
    [1, 2, 3, 4],
  )
  assert.deepEqual(
    history.map((e) => e.event_type),
    [
      'CREATE_INSTANCE_REQUESTED',
      'INSTANCE_CREATED',
      'UPDATE_INSTANCE_REQUESTED',
      'INSTANCE_UPDATED',
    ],
  )
  assert.deepEqual(
    history.map((e) => e.metadata.kind),
    ['command', 'domain', 'command', 'domain'],
  )
  r = await c.get(`/api/v1/aggregates/Instance/${encodeURIComponent(`${db}:Order:o1`)}/events`)
  assert.equal(r.json.events.length, 2, 'the duplicate request appended nothing')

  // Validation failures end FAILED with a readable reason, and nothing is applied.
  const failures: [string, unknown, RegExp][] = [
    [base, { id: 'bad1', data: { price: 3 } }, /name/],
    [base, { id: 'bad2', data: { name: 'x', stock: 1.5 } }, /stock/],
    [base, { id: 'bad3', data: { name: 'x', colour: 'red' } }, /colour/],
    [`/api/v1/databases/${db}/classes/Nope/instances`, { id: 'bad4', data: {} }, /Nope|class/i],
    [
      `/api/v1/databases/${db}/classes/Order/instances`,
      { id: 'bad5', data: { product: 'ghost', quantity: 1 } },
      /ghost|reference/i,
    ],
  ]
  for (const [path, body, reason] of failures) {
    const a = accepted(await c.post(path, body))
    const s = await c.settle(a.command_id)
    assert.equal(s.status, 'FAILED', JSON.stringify(s))
    assert.match(String(s.error?.message), reason, JSON.stringify(s))
    const id = (body as { id: string }).id
    r = await c.get(`${path}/${id}`)
    assert.equal(r.status, 404, `${id} must not exist: ${r.text}`)
  }

  // Reads: paging and filters.
  r = await c.get(`${base}?limit=1`)
  assert.equal(r.status, 200, r.text)
  assert.equal(r.json.items.length, 1)
  assert.notEqual(r.json.next, null)
  const second = await c.get(`${base}?limit=1&after=${encodeURIComponent(r.json.next as string)}`)
  assert.equal(second.json.items.length, 1)
  assert.notEqual(second.json.items[0].id, r.json.items[0].id)
  r = await c.get(`${base}?name=Chair`)
  assert.deepEqual(
    r.json.items.map((x: { id: string }) => x.id),
    [p2Id],
  )
  r = await c.get(`${base}?price=21`)
  assert.deepEqual(
    r.json.items.map((x: { id: string }) => x.id),
    ['p1'],
  )
  r = await c.get(`${base}?nope=1`)
  assert.equal(r.status, 400, r.text)

  // Delete with the right expected_seq.
  const del = accepted(await c.del(`${base}/p1?expected_seq=4`))
  assert.equal((await c.settle(del.command_id)).status, 'COMPLETED')
  r = await c.get(`${base}/p1`)
  assert.equal(r.status, 404, r.text)
  return { db }
}
