import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import Type from 'typebox'
import {
  defineAggregate,
  defineDomain,
  defineEvent,
  defineProcessManager,
  defineProjection,
  defineQuery,
  send,
  snakeCase,
} from '../../src/application/define.ts'
import { CairnError } from '../../src/core/errors.ts'
import {
  AddItem,
  Cart,
  CartCheckedOut,
  CartOpened,
  CartSummaries,
  Checkout,
  GetCart,
  ItemAdded,
  OpenCart,
  Order,
  PlaceOrder,
  shop,
} from './fixtures.ts'

/** Asserts an INVALID_CONFIG CairnError whose message matches `message`. */
const invalidConfig = (fn: () => unknown, message: RegExp): void => {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof CairnError, `not a CairnError: ${String(error)}`)
    assert.equal(error.code, 'INVALID_CONFIG')
    assert.match(error.message, message)
    return true
  })
}

const base = {
  name: 'shop',
  aggregates: [Cart, Order],
  commands: [OpenCart, AddItem, PlaceOrder],
} as const

describe('defineDomain', () => {
  test('accepts the fixture domain as declared', () => {
    assert.equal(shop.kind, 'domain')
    assert.deepEqual(
      shop.aggregates.map((a) => a.type),
      ['ShoppingCart', 'Order'],
    )
    assert.deepEqual(
      shop.commands.map((c) => c.type),
      ['OPEN_CART', 'ADD_ITEM', 'REMOVE_ITEM', 'CHECK_OUT', 'PLACE_ORDER'],
    )
    assert.ok(Object.isFrozen(shop))
  })

  test('refuses an aggregate declared twice, naming it', () => {
    const Again = defineAggregate({
      type: 'Order',
      events: [defineEvent('OrderAgain', Type.Object({}))],
      initialState: () => null,
      evolve: (s) => s,
    })
    invalidConfig(
      () => defineDomain({ ...base, aggregates: [Cart, Order, Again] }),
      /^domain shop: aggregate Order is declared twice$/,
    )
  })

  test('refuses a command declared twice, naming it', () => {
    invalidConfig(
      () => defineDomain({ ...base, commands: [OpenCart, AddItem, OpenCart] }),
      /command OPEN_CART is declared twice/,
    )
  })

  test('refuses an event type two aggregates both declare', () => {
    const Wishlist = defineAggregate({
      type: 'Wishlist',
      events: [defineEvent('ItemAdded', Type.Object({ sku: Type.String() }))],
      initialState: () => null,
      evolve: (s) => s,
    })
    invalidConfig(
      () => defineDomain({ ...base, aggregates: [Cart, Order, Wishlist] }),
      /event type ItemAdded is declared twice/,
    )
  })

  test('refuses process managers, projections or queries of the same name', () => {
    invalidConfig(
      () => defineDomain({ ...base, processManagers: [Checkout, Checkout] }),
      /process manager checkout is declared twice/,
    )
    invalidConfig(
      () => defineDomain({ ...base, projections: [CartSummaries, CartSummaries] }),
      /projection cart_summaries is declared twice/,
    )
    invalidConfig(
      () => defineDomain({ ...base, queries: [GetCart, GetCart] }),
      /query cart is declared twice/,
    )
  })

  test('refuses a command whose aggregate is not in the domain, naming both', () => {
    invalidConfig(
      () => defineDomain({ ...base, aggregates: [Cart] }),
      /command PLACE_ORDER: aggregate Order is not in the domain/,
    )
  })

  test('refuses reactions to an event of no aggregate, naming the reaction and the event', () => {
    const Stray = defineEvent('Stray', Type.Object({}))
    const pm = defineProcessManager({ name: 'strays', events: [Stray], react: () => [] })
    invalidConfig(
      () => defineDomain({ ...base, processManagers: [pm] }),
      /process-manager strays: event Stray is no aggregate's event/,
    )
    const projection = defineProjection({
      name: 'stray_rows',
      events: [CartOpened, Stray],
      setup: () => '',
      reset: async () => {},
      apply: async () => {},
    })
    invalidConfig(
      () => defineDomain({ ...base, projections: [projection] }),
      /projection stray_rows: event Stray is no aggregate's event/,
    )
    // Same type name, another definition: still not the aggregate's event.
    const lookalike = defineEvent('CartCheckedOut', Type.Object({ item_count: Type.Integer() }))
    const pm2 = defineProcessManager({
      name: 'lookalike',
      events: [lookalike],
      react: (e) => [send(OpenCart, { cart_id: e.aggregateId, customer: 'x' })],
    })
    invalidConfig(
      () => defineDomain({ ...base, processManagers: [pm2] }),
      /process-manager lookalike: event CartCheckedOut is no aggregate's event/,
    )
  })

  test('refuses a process manager that reacts to nothing, and a bad domain name', () => {
    const idle = defineProcessManager({ name: 'idle', events: [], react: () => [] })
    invalidConfig(
      () => defineDomain({ ...base, processManagers: [idle] }),
      /process manager idle reacts to no event/,
    )
    invalidConfig(() => defineDomain({ ...base, name: 'Shop' }), /domain Shop: the name must match/)
  })

  test('accepts a reaction to an event of a declared aggregate', () => {
    const d = defineDomain({ ...base, processManagers: [Checkout], queries: [GetCart] })
    assert.deepEqual(
      d.processManagers.map((p) => p.events.map((e) => e.type)),
      [[CartCheckedOut.type]],
    )
    assert.deepEqual(d.projections, [])
  })
})

describe('defineEvent', () => {
  test('keeps the version and the upcasters', () => {
    assert.equal(ItemAdded.version, 2)
    assert.deepEqual(ItemAdded.upcast[1]?.({ sku: 'a', qty: 3 }), { sku: 'a', quantity: 3 })
    assert.equal(CartOpened.version, 1)
  })

  test('refuses a version without the upcaster from each older one', () => {
    invalidConfig(
      () => defineEvent('Priced', Type.Object({}), { version: 2 }),
      /event Priced is at version 2: give upcast\[1\]/,
    )
    invalidConfig(
      () => defineEvent('Priced', Type.Object({}), { version: 3, upcast: { 1: (d) => d } }),
      /event Priced is at version 3: give upcast\[2\] \(version 2 → 3\)/,
    )
    invalidConfig(() => defineEvent('Priced', Type.Object({}), { version: 0 }), /version must be/)
    const ok = defineEvent('Priced', Type.Object({}), {
      version: 3,
      upcast: { 1: (d) => d, 2: (d) => d },
    })
    assert.equal(ok.version, 3)
  })

  test('refuses a type that is not a name', () => {
    invalidConfig(() => defineEvent('item added', Type.Object({})), /event type "item added"/)
  })
})

describe('defineAggregate', () => {
  test('default topics are the snake_case type with _commands and _events', () => {
    assert.deepEqual(Cart.topics, {
      commands: 'shopping_cart_commands',
      events: 'shopping_cart_events',
    })
    assert.deepEqual(Order.topics, { commands: 'order_commands', events: 'order_events' })
    assert.equal(snakeCase('HTTPRequestLog'), 'http_request_log')
    assert.equal(snakeCase('Account2Fa'), 'account2_fa')
  })

  test('declared topics win, one at a time', () => {
    const a = defineAggregate({
      type: 'Invoice',
      events: [],
      initialState: () => null,
      evolve: (s) => s,
      topics: { events: 'billing_events' },
    })
    assert.deepEqual(a.topics, { commands: 'invoice_commands', events: 'billing_events' })
  })

  test('defaults: version 1, no snapshots, commands expect any and POST', () => {
    assert.equal(Order.version, 1)
    assert.equal(Order.snapshotEvery, null)
    assert.equal(Cart.snapshotEvery, 5)
    assert.equal(PlaceOrder.expect, 'any')
    assert.deepEqual(PlaceOrder.http, { method: 'POST' })
    assert.equal(OpenCart.aggregate, Cart)
  })

  test('refuses an event listed twice and a bad snapshotEvery', () => {
    invalidConfig(
      () =>
        defineAggregate({
          type: 'Twice',
          events: [CartOpened, CartOpened],
          initialState: () => null,
          evolve: (s) => s,
        }),
      /aggregate Twice lists event CartOpened twice/,
    )
    invalidConfig(
      () =>
        defineAggregate({
          type: 'Snappy',
          events: [],
          initialState: () => null,
          evolve: (s) => s,
          snapshotEvery: 0,
        }),
      /aggregate Snappy: snapshotEvery/,
    )
  })

  test('queries and reactions are checked for their names too', () => {
    invalidConfig(
      () =>
        defineQuery({ name: 'a-b', path: '/x', schema: Type.Object({}), run: async () => null }),
      /query "a-b"/,
    )
  })
})

describe('routes', () => {
  const Counted = defineEvent('Counted', Type.Object({ n: Type.Integer() }))
  const Counter = defineAggregate({
    type: 'RouteCounter',
    events: [Counted],
    initialState: () => 0,
    evolve: (s, e) => s + e.data.n,
  })
  const command = (type: string, http: Parameters<typeof Counter.command>[0]['http']) =>
    Counter.command({
      type,
      schema: Type.Object({ id: Type.Integer({ minimum: 1 }), n: Type.Integer() }),
      aggregateId: (c) => String(c.id),
      decide: (c) => [{ type: 'Counted', data: { n: c.n } }],
      ...(http === undefined ? {} : { http }),
    })

  test('refuses a path outside /api/, where the bearer tokens are not asked for', () => {
    invalidConfig(
      () =>
        defineDomain({
          name: 'routes',
          aggregates: [Counter],
          commands: [command('COUNT', { path: '/counters/:id' })],
        }),
      /command COUNT: path "\/counters\/:id" must start with \/api\//,
    )
  })

  test('refuses two routes with the same method and path, whatever their parameter names', () => {
    invalidConfig(
      () =>
        defineDomain({
          name: 'routes',
          aggregates: [Counter],
          commands: [
            command('COUNT', { path: '/api/v1/counters/:id' }),
            command('COUNT_AGAIN', { path: '/api/v1/counters/:counter' }),
          ],
        }),
      /command COUNT_AGAIN: POST \/api\/v1\/counters\/:counter is also the route of command COUNT/,
    )
    invalidConfig(
      () =>
        defineDomain({
          name: 'routes',
          aggregates: [Counter],
          commands: [command('COUNT', undefined)],
          queries: [
            defineQuery({
              name: 'status',
              path: '/api/v1/commands/:id',
              schema: Type.Object({ id: Type.String() }),
              run: async () => null,
            }),
          ],
        }),
      /query status: GET \/api\/v1\/commands\/:id is also the route of the command status/,
    )
  })

  test('http: false declares no route; the default route is POST /api/v1/<domain>/<type>', () => {
    const internal = command('COUNT_INTERNALLY', false)
    assert.equal(internal.http, null)
    const domain = defineDomain({
      name: 'routes',
      aggregates: [Counter],
      commands: [internal, command('COUNT_UP', undefined)],
    })
    assert.deepEqual(
      domain.commands.map((c) => c.http),
      [null, { method: 'POST' }],
    )
  })
})
