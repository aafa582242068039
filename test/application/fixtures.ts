import Type from 'typebox'
import {
  defineAggregate,
  defineDomain,
  defineEvent,
  defineProcessManager,
  defineProjection,
  defineQuery,
  reject,
  send,
} from '../../src/application/define.ts'

/**
 * A small shop for the application API's tests: shopping carts (items whose event is at schema
 * version 2, snapshots every 5 events), orders placed by a process manager when a cart is checked
 * out, and a projection of carts with two queries.
 */

const Id = Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$' })
const Quantity = Type.Integer({ minimum: 1, maximum: 1000 })

// ---- carts ----

export const CartOpened = defineEvent(
  'CartOpened',
  Type.Object({ customer: Type.String({ minLength: 1, maxLength: 100 }) }),
)

/** Version 1 stored `qty`; version 2 calls it `quantity`. */
export const ItemAdded = defineEvent('ItemAdded', Type.Object({ sku: Id, quantity: Quantity }), {
  version: 2,
  upcast: { 1: ({ qty, ...rest }) => ({ ...rest, quantity: qty }) },
})
export const ItemRemoved = defineEvent('ItemRemoved', Type.Object({ sku: Id }))
export const CartCheckedOut = defineEvent(
  'CartCheckedOut',
  Type.Object({ item_count: Type.Integer({ minimum: 1 }) }),
)

export type CartState = {
  readonly status: 'none' | 'open' | 'checked_out'
  readonly customer: string | null
  readonly items: Readonly<Record<string, number>>
}

const cartEvents = [CartOpened, ItemAdded, ItemRemoved, CartCheckedOut] as const

const cartSpec = {
  type: 'ShoppingCart',
  events: cartEvents,
  initialState: (): CartState => ({ status: 'none', customer: null, items: {} }),
  evolve: (state: CartState, event: CartEvent): CartState => {
    switch (event.type) {
      case 'CartOpened':
        return { status: 'open', customer: event.data.customer, items: {} }
      case 'ItemAdded':
        return {
          ...state,
          items: {
            ...state.items,
            [event.data.sku]: (state.items[event.data.sku] ?? 0) + event.data.quantity,
          },
        }
      case 'ItemRemoved': {
        const items = { ...state.items }
        delete items[event.data.sku]
        return { ...state, items }
      }
      case 'CartCheckedOut':
        return { ...state, status: 'checked_out' }
    }
  },
  snapshotEvery: 5,
} as const

type CartEvent =
  | { readonly type: 'CartOpened'; readonly data: { customer: string } }
  | { readonly type: 'ItemAdded'; readonly data: { sku: string; quantity: number } }
  | { readonly type: 'ItemRemoved'; readonly data: { sku: string } }
  | { readonly type: 'CartCheckedOut'; readonly data: { item_count: number } }

export const Cart = defineAggregate(cartSpec)

/**
 * The same aggregate with `evolve` at version 2 (its state also counts the events folded): a
 * snapshot of version 1 must not be used for it.
 */
export const CartV2 = defineAggregate({
  ...cartSpec,
  version: 2,
  initialState: () => ({ ...cartSpec.initialState(), folded: 0 }),
  evolve: (state: CartState & { readonly folded: number }, event: CartEvent) => ({
    ...cartSpec.evolve(state, event),
    folded: state.folded + 1,
  }),
})

const itemCount = (state: CartState): number =>
  Object.values(state.items).reduce((a, b) => a + b, 0)

const mustBeOpen = (state: CartState) =>
  state.status === 'open' ? null : reject('CART_NOT_OPEN', `the cart is ${state.status}`)

export const OpenCart = Cart.command({
  type: 'OPEN_CART',
  schema: Type.Object(
    { cart_id: Id, customer: Type.String({ minLength: 1, maxLength: 100 }) },
    { additionalProperties: false },
  ),
  aggregateId: (c) => c.cart_id,
  expect: 'new',
  http: { method: 'POST', path: '/api/v1/carts' },
  decide: (c, state) =>
    state.status === 'none'
      ? [{ type: 'CartOpened', data: { customer: c.customer } }]
      : reject('CART_EXISTS', `cart ${c.cart_id} exists`),
})

export const AddItem = Cart.command({
  type: 'ADD_ITEM',
  schema: Type.Object(
    { cart_id: Id, sku: Id, quantity: Quantity },
    { additionalProperties: false },
  ),
  aggregateId: (c) => c.cart_id,
  http: { method: 'POST', path: '/api/v1/carts/:cart_id/items' },
  decide: (c, state) =>
    mustBeOpen(state) ?? [{ type: 'ItemAdded', data: { sku: c.sku, quantity: c.quantity } }],
})

export const RemoveItem = Cart.command({
  type: 'REMOVE_ITEM',
  schema: Type.Object({ cart_id: Id, sku: Id }, { additionalProperties: false }),
  aggregateId: (c) => c.cart_id,
  expect: 'required',
  http: { method: 'DELETE', path: '/api/v1/carts/:cart_id/items/:sku' },
  decide: (c, state) => {
    const closed = mustBeOpen(state)
    if (closed !== null) return closed
    return state.items[c.sku] === undefined
      ? reject('NO_SUCH_ITEM', `no ${c.sku} in the cart`)
      : [{ type: 'ItemRemoved', data: { sku: c.sku } }]
  },
})

export const CheckOut = Cart.command({
  type: 'CHECK_OUT',
  schema: Type.Object({ cart_id: Id }, { additionalProperties: false }),
  aggregateId: (c) => c.cart_id,
  http: { method: 'POST', path: '/api/v1/carts/:cart_id/checkout' },
  decide: (_c, state) => {
    const closed = mustBeOpen(state)
    if (closed !== null) return closed
    const count = itemCount(state)
    return count === 0
      ? reject('CART_EMPTY', 'an empty cart cannot be checked out')
      : [{ type: 'CartCheckedOut', data: { item_count: count } }]
  },
})

// ---- orders ----

export const OrderPlaced = defineEvent(
  'OrderPlaced',
  Type.Object({ cart_id: Id, item_count: Type.Integer({ minimum: 1 }) }),
)

export const Order = defineAggregate({
  type: 'Order',
  events: [OrderPlaced],
  initialState: (): { readonly placed: boolean } => ({ placed: false }),
  evolve: () => ({ placed: true }),
})

/** Sent by the checkout process manager; its route is the default one. */
export const PlaceOrder = Order.command({
  type: 'PLACE_ORDER',
  schema: Type.Object(
    { order_id: Id, cart_id: Id, item_count: Type.Integer({ minimum: 1 }) },
    { additionalProperties: false },
  ),
  aggregateId: (c) => c.order_id,
  decide: (c, state) =>
    state.placed
      ? reject('ORDER_EXISTS', `order ${c.order_id} exists`)
      : [{ type: 'OrderPlaced', data: { cart_id: c.cart_id, item_count: c.item_count } }],
})

/** The order of a cart: one per cart, named after it. */
export const orderIdOf = (cartId: string): string => `order-${cartId}`

export const Checkout = defineProcessManager({
  name: 'checkout',
  events: [CartCheckedOut],
  react: (event) => [
    send(PlaceOrder, {
      order_id: orderIdOf(event.aggregateId),
      cart_id: event.aggregateId,
      item_count: event.data.item_count,
    }),
  ],
})

// ---- read model ----

export type CartRow = {
  readonly id: string
  readonly customer: string
  readonly items: number
  readonly status: string
  readonly order_id: string | null
  readonly seq: number
}

export const CartSummaries = defineProjection({
  name: 'cart_summaries',
  events: [CartOpened, ItemAdded, ItemRemoved, CartCheckedOut, OrderPlaced],
  setup: ({ table }) => `
    CREATE TABLE IF NOT EXISTS ${table('shop_carts')} (
      id text PRIMARY KEY, customer text NOT NULL, items jsonb NOT NULL, status text NOT NULL,
      order_id text, seq bigint NOT NULL);`,
  reset: async ({ tx, table }) => {
    await tx.query(`DELETE FROM ${table('shop_carts')}`)
  },
  apply: async (events, { tx, table }) => {
    const carts = table('shop_carts')
    for (const e of events) {
      const seq = e.meta.sequence
      switch (e.type) {
        case 'CartOpened':
          await tx.query(
            `INSERT INTO ${carts} (id, customer, items, status, seq) VALUES ($1, $2, '{}', 'open', $3)`,
            [e.aggregateId, e.data.customer, seq],
          )
          break
        case 'ItemAdded':
          await tx.query(
            `UPDATE ${carts}
                SET items = jsonb_set(items, ARRAY[$2::text],
                      to_jsonb(COALESCE((items ->> $2)::int, 0) + $3::int)), seq = $4
              WHERE id = $1`,
            [e.aggregateId, e.data.sku, e.data.quantity, seq],
          )
          break
        case 'ItemRemoved':
          await tx.query(`UPDATE ${carts} SET items = items - $2::text, seq = $3 WHERE id = $1`, [
            e.aggregateId,
            e.data.sku,
            seq,
          ])
          break
        case 'CartCheckedOut':
          await tx.query(`UPDATE ${carts} SET status = 'checked_out', seq = $2 WHERE id = $1`, [
            e.aggregateId,
            seq,
          ])
          break
        case 'OrderPlaced':
          await tx.query(`UPDATE ${carts} SET order_id = $2 WHERE id = $1`, [
            e.data.cart_id,
            e.aggregateId,
          ])
          break
      }
    }
  },
})

const rowSql = (table: string) =>
  `SELECT id, customer,
          (SELECT COALESCE(sum(value::int), 0)::int FROM jsonb_each_text(items)) AS items,
          status, order_id, seq::int AS seq
     FROM ${table}`

export const GetCart = defineQuery({
  name: 'cart',
  path: '/api/v1/carts/:cart_id',
  schema: Type.Object({ cart_id: Id }),
  run: async ({ cart_id }, { sql, table }) =>
    (await sql.query<CartRow>(`${rowSql(table('shop_carts'))} WHERE id = $1`, [cart_id]))[0] ??
    null,
})

export const CartsOf = defineQuery({
  name: 'carts_of_customer',
  path: '/api/v1/carts',
  schema: Type.Object({ customer: Type.String({ minLength: 1 }) }),
  run: async ({ customer }, { sql, table }) => ({
    carts: await sql.query<CartRow>(
      `${rowSql(table('shop_carts'))} WHERE customer = $1 ORDER BY id`,
      [customer],
    ),
  }),
})

export const shop = defineDomain({
  name: 'shop',
  aggregates: [Cart, Order],
  commands: [OpenCart, AddItem, RemoveItem, CheckOut, PlaceOrder],
  processManagers: [Checkout],
  projections: [CartSummaries],
  queries: [GetCart, CartsOf],
})
