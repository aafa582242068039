import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { createCommandProcessor } from '../../src/application/command-processor.ts'
import { COMMAND_REJECTED, foldStream, reactionCommandId } from '../../src/application/decider.ts'
import {
  createProcessManagerHandler,
  handlerNames,
  rebuildDeclaredProjection,
} from '../../src/application/reactions.ts'
import Type from 'typebox'
import { defineAggregate, defineDomain, defineEvent } from '../../src/application/define.ts'
import { createSnapshotStore } from '../../src/application/snapshots.ts'
import { createTestService } from '../../src/application/testing.ts'
import type { TestService } from '../../src/application/testing.ts'
import { createEnvelope } from '../../src/core/envelope.ts'
import type { EventStore } from '../../src/event-store/event-store.ts'
import { createProcessedEventRegistry } from '../../src/registry/processed-events.ts'
import {
  AddItem,
  Cart,
  CartV2,
  CheckOut,
  Checkout,
  OpenCart,
  Order,
  RemoveItem,
  orderIdOf,
  shop,
} from './fixtures.ts'
import type { CartRow } from './fixtures.ts'
import { handlerCtx, streamTypes } from './helpers.ts'

type Accepted = { command_id: string; status: string; sequence_number: number }
type Problem = {
  status: number
  code: string
  problems?: { pointer: string; message: string }[]
  expected_seq?: number
  actual_seq?: number
}
type CommandStatus = {
  status: string
  error?: { code: string; message: string }
  result?: { events: { event_type: string; sequence_number: number }[] }
}

const schemaOf = (svc: TestService): string => svc.schema

describe('shop service, embedded, decided by the command worker', () => {
  let svc: TestService
  let schema: string
  before(async () => {
    svc = await createTestService(shop)
    schema = schemaOf(svc)
  })
  after(() => svc.destroy())

  const post = async (url: string, body: unknown, headers: Record<string, string> = {}) => {
    const r = await svc.request<Accepted>('POST', url, body, headers)
    assert.equal(r.status, 202, JSON.stringify(r.body))
    return r.body.command_id
  }
  const openCart = async (id: string, customer = 'Ada') => {
    const outcome = await svc.waitForCommand(await post('/api/v1/carts', { cart_id: id, customer }))
    assert.equal(outcome.outcome, 'completed')
  }

  test('a stored command processed again returns its outcome and appends nothing', async () => {
    const sent = await svc.send(OpenCart, { cart_id: 'twice', customer: 'Ada' })
    const decided = await svc.waitForCommand(sent.commandId)
    assert.equal(decided.outcome, 'completed')
    const envelope = await svc.ws.eventStore.getByEventId(sent.commandId)
    assert.ok(envelope !== null)
    const before = await svc.ws.eventStore.currentSequence(Cart.type, 'twice')
    assert.equal(before, 2)
    assert.deepEqual(await svc.processor.process(envelope), decided)
    assert.deepEqual(await svc.processor.process(envelope), decided)
    assert.equal(await svc.ws.eventStore.currentSequence(Cart.type, 'twice'), before)
    assert.deepEqual((await svc.load(Cart, 'twice')).state, {
      status: 'open',
      customer: 'Ada',
      items: {},
    })
  })

  test("send honours the command's expectation like its route does", async () => {
    await svc.send(OpenCart, { cart_id: 'sent', customer: 'Ada' })
    await assert.rejects(svc.send(OpenCart, { cart_id: 'sent', customer: 'Eve' }), {
      code: 'SEQUENCE_CONFLICT',
    })
    await assert.rejects(svc.send(RemoveItem, { cart_id: 'sent', sku: 'pen' }), {
      code: 'INVALID_ENVELOPE',
      message: /REMOVE_ITEM needs expectedSeq/,
    })
    await assert.rejects(svc.send(AddItem, { cart_id: 'sent', sku: 'pen', quantity: 0 }), {
      code: 'INVALID_ENVELOPE',
      message: /\/quantity/,
    })
    const removed = await svc.send(
      RemoveItem,
      { cart_id: 'sent', sku: 'pen' },
      { expectedSeq: await svc.ws.eventStore.currentSequence(Cart.type, 'sent') },
    )
    const outcome = await svc.waitForCommand(removed.commandId)
    assert.equal(outcome.code, 'NO_SUCH_ITEM')
  })

  test('an event stored at version 1 reaches evolve and the projection upcast', async () => {
    await openCart('old')
    const appended = await svc.ws.eventStore.append({
      envelopes: [
        createEnvelope({
          event_type: 'ItemAdded',
          aggregate_type: Cart.type,
          aggregate_id: 'old',
          data: { sku: 'pen', qty: 4 },
          schema_version: '1',
          metadata: {
            kind: 'domain',
            kafka_topic: Cart.topics.events,
            ordering_key: 'old',
          },
        }),
      ],
    })
    assert.equal(appended.envelopes[0]?.sequence_number, 3)
    await svc.waitForCommand(
      (await svc.send(AddItem, { cart_id: 'old', sku: 'pen', quantity: 1 })).commandId,
    )
    await svc.settle()
    assert.deepEqual((await svc.load(Cart, 'old')).state.items, { pen: 5 })
    const row = (await svc.query('cart', { cart_id: 'old' })) as CartRow
    assert.equal(row.items, 5)
  })

  test('a rejection is stored in the stream and reported FAILED with its code', async () => {
    await openCart('empty')
    const id = await post('/api/v1/carts/empty/checkout', {})
    const outcome = await svc.waitForCommand(id)
    assert.equal(outcome.outcome, 'rejected')
    assert.equal(outcome.code, 'CART_EMPTY')
    const stream = await svc.ws.eventStore.readStream(Cart.type, 'empty')
    const rejection = stream.at(-1)
    assert.equal(rejection?.event_type, COMMAND_REJECTED)
    assert.equal(rejection?.metadata.kind, 'domain')
    assert.equal(rejection?.metadata.command_id, id)
    assert.deepEqual(rejection?.data, {
      command_id: id,
      command_type: 'CHECK_OUT',
      code: 'CART_EMPTY',
      reason: 'an empty cart cannot be checked out',
    })
    const status = await svc.request<CommandStatus>('GET', `/api/v1/commands/${id}`)
    assert.equal(status.status, 200)
    assert.equal(status.body.status, 'FAILED')
    assert.deepEqual(status.body.error, {
      code: 'CART_EMPTY',
      message: 'an empty cart cannot be checked out',
    })
    // The rejection changed nothing.
    assert.deepEqual((await svc.load(Cart, 'empty')).state, {
      status: 'open',
      customer: 'Ada',
      items: {},
    })
  })

  test('Idempotency-Key: a retry names the same command; another body under it is 422', async () => {
    const body = { cart_id: 'idem', customer: 'Ada' }
    const headers = { 'Idempotency-Key': 'open-idem-1' }
    const first = await post('/api/v1/carts', body, headers)
    const retry = await post('/api/v1/carts', body, headers)
    assert.equal(retry, first)
    await svc.waitForCommand(first)
    const late = await post('/api/v1/carts', body, headers)
    assert.equal(late, first)
    const reused = await svc.request<Problem>(
      'POST',
      '/api/v1/carts',
      { ...body, customer: 'Eve' },
      headers,
    )
    assert.equal(reused.status, 422)
    assert.equal(reused.body.code, 'idempotency_key_reused')
    await svc.settle()
    assert.deepEqual(await streamTypes(svc.ws.eventStore, Cart.type, 'idem'), [
      '>OPEN_CART_REQUESTED',
      'CartOpened',
    ])
  })

  test("expect 'required': 428 without If-Match, 409 on a wrong one, 202 on the right one", async () => {
    await openCart('req')
    await svc.waitForCommand(await post('/api/v1/carts/req/items', { sku: 'pen', quantity: 2 }))
    const missing = await svc.request<Problem>('DELETE', '/api/v1/carts/req/items/pen')
    assert.equal(missing.status, 428)
    assert.equal(missing.body.code, 'expected_seq_required')
    const current = await svc.ws.eventStore.currentSequence(Cart.type, 'req')
    assert.equal(current, 4)
    const wrong = await svc.request<Problem>('DELETE', '/api/v1/carts/req/items/pen', undefined, {
      'If-Match': '"2"',
    })
    assert.equal(wrong.status, 409)
    assert.equal(wrong.headers['content-type'], 'application/problem+json')
    assert.equal(wrong.body.expected_seq, 2)
    assert.equal(wrong.body.actual_seq, current)
    const right = await svc.request<Accepted>('DELETE', '/api/v1/carts/req/items/pen', undefined, {
      'If-Match': `"${current}"`,
    })
    assert.equal(right.status, 202)
    assert.equal(right.body.sequence_number, current + 1)
    assert.equal((await svc.waitForCommand(right.body.command_id)).outcome, 'completed')
    assert.deepEqual((await svc.load(Cart, 'req')).state.items, {})
    // expected_seq in the query does as well.
    const stale = await svc.request<Problem>(
      'DELETE',
      `/api/v1/carts/req/items/pen?expected_seq=${current}`,
    )
    assert.equal(stale.status, 409)
    assert.equal(stale.body.actual_seq, current + 2)
  })

  test('a body with an unknown property is 400, pointing at it', async () => {
    const r = await svc.request<Problem>('POST', '/api/v1/carts/x/items', {
      sku: 'pen',
      quantity: 1,
      colour: 'red',
    })
    assert.equal(r.status, 400)
    assert.equal(r.body.code, 'validation_failed')
    assert.deepEqual(r.body.problems, [
      { pointer: '/colour', message: 'unknown field "colour" (allowed: cart_id, sku, quantity)' },
    ])
    const clash = await svc.request<Problem>('POST', '/api/v1/carts/x/items', {
      cart_id: 'y',
      sku: 'pen',
      quantity: 1,
    })
    assert.equal(clash.status, 400)
    assert.deepEqual(clash.body.problems, [
      { pointer: '/cart_id', message: 'differs from the path' },
    ])
    const badPath = await svc.request<Problem>('POST', '/api/v1/carts/a%20b/items', {
      sku: 'pen',
      quantity: 1,
    })
    assert.equal(badPath.status, 400)
    assert.equal(badPath.body.problems?.[0]?.pointer, '#/path/cart_id')
  })

  test('GET /openapi.json lists each command route and each query route', async () => {
    type Doc = { paths: Record<string, Record<string, { operationId: string; responses: object }>> }
    const r = await svc.request<Doc>('GET', '/openapi.json')
    assert.equal(r.status, 200)
    const operations = Object.entries(r.body.paths)
      .flatMap(([path, methods]) =>
        Object.entries(methods).map(([m, op]) => `${m.toUpperCase()} ${path} ${op.operationId}`),
      )
      .sort()
    assert.deepEqual(operations, [
      'DELETE /api/v1/carts/{cart_id}/items/{sku} REMOVE_ITEM',
      'GET /api/v1/carts carts_of_customer',
      'GET /api/v1/carts/{cart_id} cart',
      'GET /api/v1/commands/{command_id} getCommand',
      'POST /api/v1/carts OPEN_CART',
      'POST /api/v1/carts/{cart_id}/checkout CHECK_OUT',
      'POST /api/v1/carts/{cart_id}/items ADD_ITEM',
      'POST /api/v1/shop/place-order PLACE_ORDER',
    ])
    const remove = r.body.paths['/api/v1/carts/{cart_id}/items/{sku}']?.['delete']
    assert.ok(remove !== undefined && '428' in remove.responses)
    const add = r.body.paths['/api/v1/carts/{cart_id}/items']?.['post']
    assert.ok(add !== undefined && !('428' in add.responses))
  })

  test('the process manager places one order per checkout; the projection and queries show it', async () => {
    await openCart('pm', 'Grace')
    await svc.send(AddItem, { cart_id: 'pm', sku: 'pen', quantity: 2 })
    await svc.send(AddItem, { cart_id: 'pm', sku: 'ink', quantity: 1 })
    await svc.send(CheckOut, { cart_id: 'pm' })
    await svc.settle()
    const order = orderIdOf('pm')
    assert.deepEqual(await streamTypes(svc.ws.eventStore, Order.type, order), [
      '>PLACE_ORDER_REQUESTED',
      'OrderPlaced',
    ])
    const checkedOut = (await svc.ws.eventStore.readStream(Cart.type, 'pm')).find(
      (e) => e.event_type === 'CartCheckedOut',
    )
    assert.ok(checkedOut !== undefined)
    const placed = (await svc.ws.eventStore.readStream(Order.type, order))[0]
    assert.equal(placed?.event_id, reactionCommandId('checkout', checkedOut.event_id, 0))
    assert.equal(
      (await svc.outcome(placed?.event_id ?? ''))?.outcome,
      'completed',
      'the order was decided',
    )

    // Redelivered twice more: nothing new is stored.
    const handle = createProcessManagerHandler({
      domain: shop,
      processManager: Checkout,
      eventStore: svc.ws.eventStore,
    })
    for (let i = 0; i < 2; i++) {
      assert.deepEqual(await handle(checkedOut, handlerCtx), { commands: [placed?.event_id] })
    }
    assert.equal((await svc.ws.eventStore.readStream(Order.type, order)).length, 2)

    const row = await svc.request<CartRow>('GET', '/api/v1/carts/pm')
    assert.equal(row.status, 200)
    assert.deepEqual(row.body, {
      id: 'pm',
      customer: 'Grace',
      items: 3,
      status: 'checked_out',
      order_id: order,
      seq: await svc.ws.eventStore.currentSequence(Cart.type, 'pm'),
    })
    const mine = await svc.request<{ carts: CartRow[] }>('GET', '/api/v1/carts?customer=Grace')
    assert.deepEqual(
      mine.body.carts.map((c) => c.id),
      ['pm'],
    )
    assert.deepEqual(await svc.query('cart', { cart_id: 'pm' }), row.body)
    assert.equal((await svc.request('GET', '/api/v1/carts/nope')).status, 404)
    assert.equal((await svc.request<Problem>('GET', '/api/v1/carts')).status, 400)
  })

  test('snapshots every 5 events; a new processor loads the same state; another evolve version ignores them', async () => {
    await openCart('snap')
    const skus = ['pen', 'ink', 'pad']
    let last = ''
    for (let i = 1; i <= 11; i++) {
      last = (await svc.send(AddItem, { cart_id: 'snap', sku: skus[i % 3] as string, quantity: i }))
        .commandId
    }
    await svc.waitForCommand(last)
    await svc.settle()
    const current = await svc.ws.eventStore.currentSequence(Cart.type, 'snap')
    assert.equal(current, 24)
    const expected = { status: 'open', customer: 'Ada', items: { ink: 22, pad: 26, pen: 18 } }
    const stream = await svc.ws.eventStore.readStream(Cart.type, 'snap')
    assert.deepEqual(foldStream(Cart, Cart.initialState(), stream), expected)

    const rows = await svc.ws.sql.query<{ version: number; seq: string; state: unknown }>(
      `SELECT version, seq, state FROM ${schema}.snapshots
        WHERE aggregate_type = $1 AND aggregate_id = $2`,
      [Cart.type, 'snap'],
    )
    assert.equal(rows.length, 1)
    const snap = rows[0] as { version: number; seq: string; state: unknown }
    const snapSeq = Number(snap.seq)
    assert.ok(snapSeq >= 10 && snapSeq <= current, `snapshot at ${snapSeq}`)
    assert.equal(snap.version, 1)
    const state = typeof snap.state === 'string' ? (JSON.parse(snap.state) as unknown) : snap.state
    assert.deepEqual(
      state,
      foldStream(
        Cart,
        Cart.initialState(),
        stream.filter((e) => e.sequence_number <= snapSeq),
      ),
    )

    // A fresh processor starts from the snapshot: it reads only the events after it.
    const reads: (number | undefined)[] = []
    const es = svc.ws.eventStore
    const spy: EventStore = {
      ...es,
      readStream: (type, id, options) => {
        reads.push(options?.fromSeq)
        return es.readStream(type, id, options)
      },
    }
    const snapshots = createSnapshotStore(svc.ws.sql, schema)
    const fresh = createCommandProcessor({ domain: shop, eventStore: spy, snapshots })
    assert.deepEqual(await fresh.load(Cart, 'snap'), { state: expected, sequence: current })
    assert.deepEqual(reads, snapSeq === current ? [] : [snapSeq + 1])

    // Version 2 of evolve ignores the version-1 snapshot, folds from the start and replaces it.
    reads.length = 0
    const v2 = createCommandProcessor({ domain: shop, eventStore: spy, snapshots })
    assert.deepEqual(await v2.load(CartV2, 'snap'), {
      state: { ...expected, folded: 12 },
      sequence: current,
    })
    assert.deepEqual(reads, [1])
    const replaced = await svc.ws.sql.query<{ version: number; seq: string }>(
      `SELECT version, seq FROM ${schema}.snapshots WHERE aggregate_type = $1 AND aggregate_id = $2`,
      [Cart.type, 'snap'],
    )
    assert.deepEqual(
      replaced.map((r) => [r.version, Number(r.seq)]),
      [[2, current]],
    )
    assert.deepEqual(await snapshots.load(Cart.type, 'snap', 1), null)
  })

  test('rebuildDeclaredProjection gives back the rows after they are deleted', async () => {
    await svc.settle()
    const table = `"${schema}"."shop_carts"`
    const rowsOf = () => svc.ws.sql.query(`SELECT * FROM ${table} ORDER BY id`)
    const before = await rowsOf()
    assert.ok(before.length >= 5, `${before.length} rows`)
    await svc.ws.sql.query(`DELETE FROM ${table}`)
    assert.deepEqual(await rowsOf(), [])
    const registry = createProcessedEventRegistry({
      sql: svc.ws.sql,
      schema,
      member: 'rebuild-test',
    })
    await registry.start()
    try {
      const projection = shop.projections[0]
      assert.ok(projection !== undefined)
      const applied = await rebuildDeclaredProjection({
        domain: shop,
        projection,
        eventStore: svc.ws.eventStore,
        sql: svc.ws.sql,
        schema,
        registry,
        batchSize: 7,
      })
      let expected = 0
      const types = new Set(projection.events.map((e) => e.type))
      for await (const e of svc.ws.eventStore.readByDate(0, Number.POSITIVE_INFINITY)) {
        if (e.metadata.kind === 'domain' && types.has(e.event_type)) expected++
      }
      assert.equal(applied, expected)
    } finally {
      await registry.stop()
    }
    assert.deepEqual(await rowsOf(), before)
    const done = await svc.ws.sql.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM ${schema}.processed_events WHERE handler = $1 AND status = 'done'`,
      [handlerNames(shop).projection('cart_summaries')],
    )
    assert.ok((done[0]?.n ?? 0) > 0)
  })
})

describe('shop service, embedded, decided inline', () => {
  let svc: TestService
  let schema: string
  before(async () => {
    svc = await createTestService(shop, { decide: 'inline' })
    schema = schemaOf(svc)
  })
  after(() => svc.destroy())

  test('a command answers 200 with its outcome; the worker does not decide it again', async () => {
    const r = await svc.request<CommandStatus & { command_id: string }>('POST', '/api/v1/carts', {
      cart_id: 'inline',
      customer: 'Ada',
    })
    assert.equal(r.status, 200, JSON.stringify(r.body))
    assert.equal(r.body.status, 'COMPLETED')
    assert.deepEqual(
      r.body.result?.events.map((e) => [e.event_type, e.sequence_number]),
      [['CartOpened', 2]],
    )
    assert.equal(r.headers['content-location'], `/api/v1/commands/${r.body.command_id}`)
    await svc.settle()
    assert.deepEqual(await streamTypes(svc.ws.eventStore, Cart.type, 'inline'), [
      '>OPEN_CART_REQUESTED',
      'CartOpened',
    ])
    const records = await svc.ws.sql.query<{ owner: string; attempts: number; status: string }>(
      `SELECT owner, attempts, status FROM ${schema}.processed_events
        WHERE handler = $1 AND event_id = $2`,
      [handlerNames(shop).commands, r.body.command_id],
    )
    assert.equal(records.length, 1)
    assert.equal(records[0]?.status, 'done')
    assert.equal(records[0]?.attempts, 1)
    // Decided here as a rule; a command worker that claimed it first (a loaded machine) decided
    // it instead, and the answer waited for its outcome: once either way.
    assert.match(records[0]?.owner ?? '', /^shop-(oms|commands)@/)
  })

  test('a rejection answers 200 FAILED with its code', async () => {
    const r = await svc.request<CommandStatus>('POST', '/api/v1/carts', {
      cart_id: 'inline',
      customer: 'Bob',
    })
    assert.equal(r.status, 409, 'expect new: the cart exists, so the store refuses it')
    const checkout = await svc.request<CommandStatus>('POST', '/api/v1/carts/inline/checkout', {})
    assert.equal(checkout.status, 200)
    assert.equal(checkout.body.status, 'FAILED')
    assert.equal(checkout.body.error?.code, 'CART_EMPTY')
    await svc.settle()
    const stream = await svc.ws.eventStore.readStream(Cart.type, 'inline')
    assert.equal(stream.filter((e) => e.event_type === COMMAND_REJECTED).length, 1)
  })

  test('the process manager follows inline decisions too', async () => {
    await svc.send(AddItem, { cart_id: 'inline', sku: 'pen', quantity: 1 })
    const sent = await svc.send(CheckOut, { cart_id: 'inline' })
    assert.equal((await svc.waitForCommand(sent.commandId)).outcome, 'completed')
    await svc.settle()
    const placed = await svc.load(Order, orderIdOf('inline'))
    assert.deepEqual(placed, { state: { placed: true }, sequence: 2 })
  })
})

describe('generated routes', () => {
  const Counted = defineEvent('Counted', Type.Object({ n: Type.Integer() }))
  const Counter = defineAggregate({
    type: 'RouteCounter',
    events: [Counted],
    initialState: () => 0,
    evolve: (s, e) => s + e.data.n,
  })
  const Count = Counter.command({
    type: 'COUNT',
    schema: Type.Object({ id: Type.Integer({ minimum: 1 }), n: Type.Integer() }),
    aggregateId: (c) => String(c.id),
    decide: (c) => [{ type: 'Counted', data: { n: c.n } }],
    http: { path: '/api/v1/counters/:id' },
  })
  const Reset = Counter.command({
    type: 'RESET',
    schema: Type.Object({ id: Type.Integer() }),
    aggregateId: (c) => String(c.id),
    decide: () => [],
    http: false,
  })
  const counters = defineDomain({
    name: 'counters',
    aggregates: [Counter],
    commands: [Count, Reset],
  })

  test('a path parameter takes its property type; a command with http: false has no route', async (t) => {
    const svc = await createTestService(counters)
    t.after(() => svc.destroy())
    const ok = await svc.request<{ command_id: string; aggregate_id: string }>(
      'POST',
      '/api/v1/counters/42',
      { n: 3 },
    )
    assert.equal(ok.status, 202, JSON.stringify(ok.body))
    assert.equal(ok.body.aggregate_id, '42')
    assert.equal((await svc.waitForCommand(ok.body.command_id)).outcome, 'completed')
    const text = await svc.request<{ problems: { pointer: string }[] }>(
      'POST',
      '/api/v1/counters/forty-two',
      { n: 3 },
    )
    assert.equal(text.status, 400)
    assert.equal(text.body.problems[0]?.pointer, '#/path/id')
    // Its default route would be POST /api/v1/tally/reset.
    assert.equal((await svc.request('POST', '/api/v1/tally/reset', { id: 42 })).status, 404)
    const doc = await svc.request<{ paths: Record<string, unknown> }>('GET', '/openapi.json')
    assert.deepEqual(Object.keys(doc.body.paths).sort(), [
      '/api/v1/commands/{command_id}',
      '/api/v1/counters/{id}',
    ])
  })
})
