import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import {
  COMMAND_REJECTED,
  commandEnvelope,
  decisionEnvelopes,
  decisionEventId,
  foldStream,
  parseCommandEnvelope,
  problemsOf,
  resultOf,
  runDecide,
  upcastData,
} from '../../src/application/decider.ts'
import type { Decision } from '../../src/application/decider.ts'
import { defineAggregate } from '../../src/application/define.ts'
import { given } from '../../src/application/testing.ts'
import type { StoredEnvelope } from '../../src/core/envelope.ts'
import { CairnError } from '../../src/core/errors.ts'
import { AddItem, Cart, CheckOut, ItemAdded, OpenCart, RemoveItem, shop } from './fixtures.ts'
import type { CartState } from './fixtures.ts'

const CART = 'c-1'

/** A stored envelope of the cart's stream, as the event store would return it. */
const stored = (
  sequence: number,
  type: string,
  data: Record<string, unknown>,
  options: { kind?: 'domain' | 'command'; version?: string; aggregateId?: string } = {},
): StoredEnvelope => ({
  event_id: `00000000-0000-4000-8000-${String(sequence).padStart(12, '0')}`,
  event_type: type,
  aggregate_type: Cart.type,
  aggregate_id: options.aggregateId ?? CART,
  sequence_number: sequence,
  occurred_at: '2026-01-01T00:00:00.000Z',
  actor: null,
  data,
  metadata: { kind: options.kind ?? 'domain' },
  schema_version: options.version ?? '1',
})

const ctx = {
  commandId: '11111111-1111-4111-8111-111111111111',
  actor: null,
  sequence: 1,
  submittedAt: '2026-01-01T00:00:00.000Z',
}

/** An invalid-envelope CairnError whose message matches. */
const invalidEnvelope =
  (message: RegExp) =>
  (error: unknown): boolean => {
    assert.ok(error instanceof CairnError, `not a CairnError: ${String(error)}`)
    assert.equal(error.code, 'INVALID_ENVELOPE')
    assert.match(error.message, message)
    return true
  }

describe('folding a stream', () => {
  test('an event stored at version 1 is upcast to version 2 before evolve sees it', () => {
    const state = foldStream(Cart, Cart.initialState(), [
      stored(1, 'CartOpened', { customer: 'Ada' }),
      stored(2, 'ItemAdded', { sku: 'pen', qty: 2 }, { version: '1' }),
      stored(3, 'ItemAdded', { sku: 'pen', quantity: 3 }, { version: '2' }),
    ])
    assert.deepEqual(state, { status: 'open', customer: 'Ada', items: { pen: 5 } })
  })

  test('upcastData knows versions 1 to the current one only', () => {
    assert.deepEqual(upcastData(ItemAdded, '1', { sku: 'a', qty: 1 }), { sku: 'a', quantity: 1 })
    assert.deepEqual(upcastData(ItemAdded, '2', { sku: 'a', quantity: 1 }), {
      sku: 'a',
      quantity: 1,
    })
    assert.throws(
      () => upcastData(ItemAdded, '3', { sku: 'a', quantity: 1 }),
      invalidEnvelope(/schema_version "3"; this code knows 1 to 2/),
    )
    assert.throws(() => upcastData(ItemAdded, '0', {}), invalidEnvelope(/schema_version "0"/))
    assert.throws(() => upcastData(ItemAdded, 'v1', {}), invalidEnvelope(/schema_version "v1"/))
  })

  test('commands and stored rejections are skipped: evolve never sees them', () => {
    const seen: string[] = []
    const Recording = defineAggregate({
      type: Cart.type,
      events: Cart.events,
      initialState: Cart.initialState,
      evolve: (state: CartState, event, meta) => {
        seen.push(`${event.type}@${meta.sequence}`)
        return Cart.evolve(state, event, meta)
      },
    })
    const state = foldStream(Recording, Recording.initialState(), [
      stored(1, 'OPEN_CART_REQUESTED', { command_type: 'OPEN_CART' }, { kind: 'command' }),
      stored(2, 'CartOpened', { customer: 'Ada' }),
      stored(3, 'ADD_ITEM_REQUESTED', { command_type: 'ADD_ITEM' }, { kind: 'command' }),
      stored(4, COMMAND_REJECTED, { code: 'X', reason: 'y' }),
      stored(5, 'ItemAdded', { sku: 'pen', quantity: 1 }, { version: '2' }),
    ])
    assert.deepEqual(seen, ['CartOpened@2', 'ItemAdded@5'])
    assert.deepEqual(state, { status: 'open', customer: 'Ada', items: { pen: 1 } })
  })

  test('a domain event the aggregate does not declare throws, naming it and where', () => {
    assert.throws(
      () =>
        foldStream(Cart, Cart.initialState(), [
          stored(1, 'CartOpened', { customer: 'Ada' }),
          stored(2, 'CartAbandoned', {}),
        ]),
      invalidEnvelope(/ShoppingCart c-1 #2: event type CartAbandoned is not one of/),
    )
  })
})

describe('deciding', () => {
  const open: CartState = { status: 'open', customer: 'Ada', items: { pen: 2 } }

  test('returns the events, or the rejection, as values', () => {
    assert.deepEqual(runDecide(AddItem, { cart_id: CART, sku: 'ink', quantity: 1 }, open, ctx), {
      outcome: 'events',
      events: [{ type: 'ItemAdded', data: { sku: 'ink', quantity: 1 } }],
    })
    const rejected = runDecide(RemoveItem, { cart_id: CART, sku: 'ink' }, open, ctx)
    assert.equal(rejected.outcome, 'rejected')
    assert.equal(rejected.outcome === 'rejected' && rejected.rejection.code, 'NO_SUCH_ITEM')
  })

  test('throws when decide returns an event its aggregate does not declare', () => {
    const Buggy = Cart.command({
      type: 'BUGGY_UNDECLARED',
      schema: AddItem.schema,
      aggregateId: (c) => c.cart_id,
      decide: () => [{ type: 'CartAbandoned', data: {} }] as never,
    })
    assert.throws(
      () => runDecide(Buggy, { cart_id: CART, sku: 'a', quantity: 1 }, open, ctx),
      invalidEnvelope(/BUGGY_UNDECLARED: decide returned event "CartAbandoned" \(#0\)/),
    )
  })

  test('throws when an event does not match its schema, pointing at the field', () => {
    const Buggy = Cart.command({
      type: 'BUGGY_DATA',
      schema: AddItem.schema,
      aggregateId: (c) => c.cart_id,
      decide: (c) => [
        { type: 'ItemAdded', data: { sku: c.sku, quantity: c.quantity } },
        { type: 'ItemAdded', data: { sku: c.sku, quantity: 0 } },
      ],
    })
    assert.throws(
      () => runDecide(Buggy, { cart_id: CART, sku: 'a', quantity: 1 }, open, ctx),
      invalidEnvelope(/BUGGY_DATA: event ItemAdded \(#1\) does not match its schema: \/quantity/),
    )
  })

  test('throws when decide returns neither events nor a rejection', () => {
    const Buggy = Cart.command({
      type: 'BUGGY_SHAPE',
      schema: AddItem.schema,
      aggregateId: (c) => c.cart_id,
      decide: () => ({ type: 'ItemAdded' }) as never,
    })
    assert.throws(
      () => runDecide(Buggy, { cart_id: CART, sku: 'a', quantity: 1 }, open, ctx),
      invalidEnvelope(/BUGGY_SHAPE: decide must return events or reject/),
    )
  })

  test('decisionEventId is a UUID fixed by command, aggregate and index', () => {
    const id = decisionEventId(ctx.commandId, CART, 0)
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    assert.equal(decisionEventId(ctx.commandId, CART, 0), id)
    const others = [
      decisionEventId(ctx.commandId, CART, 1),
      decisionEventId(ctx.commandId, 'c-2', 0),
      decisionEventId('22222222-2222-4222-8222-222222222222', CART, 0),
    ]
    assert.equal(new Set([id, ...others]).size, 4)
  })

  test('decisionEnvelopes: deterministic ids, current schema versions, a rejection as one event', () => {
    const command = { ...stored(7, 'ADD_ITEM_REQUESTED', {}, { kind: 'command' }) }
    const decision: Decision = {
      outcome: 'events',
      events: [
        { type: 'ItemAdded', data: { sku: 'a', quantity: 1 } },
        { type: 'CartCheckedOut', data: { item_count: 3 } },
      ],
    }
    const envelopes = decisionEnvelopes(shop, AddItem, command, ctx.commandId, decision)
    assert.deepEqual(
      envelopes.map((e) => [e.event_id, e.event_type, e.schema_version, e.metadata.kafka_topic]),
      [
        [decisionEventId(ctx.commandId, CART, 0), 'ItemAdded', '2', 'shopping_cart_events'],
        [decisionEventId(ctx.commandId, CART, 1), 'CartCheckedOut', '1', 'shopping_cart_events'],
      ],
    )
    const [rejection] = decisionEnvelopes(shop, CheckOut, command, ctx.commandId, {
      outcome: 'rejected',
      rejection: { rejected: true, code: 'CART_EMPTY', reason: 'empty' },
    })
    assert.equal(rejection?.event_type, COMMAND_REJECTED)
    assert.equal(rejection?.event_id, decisionEventId(ctx.commandId, CART, 0))
    assert.deepEqual(rejection?.data, {
      command_id: ctx.commandId,
      command_type: 'CHECK_OUT',
      code: 'CART_EMPTY',
      reason: 'empty',
    })
    const result = resultOf([{ ...(rejection as StoredEnvelope), sequence_number: 8 }])
    assert.equal(result.outcome, 'rejected')
    assert.equal(result.code, 'CART_EMPTY')
    assert.equal(result.events[0]?.sequence_number, 8)
  })
})

describe('reading a command back from its envelope', () => {
  const commandId = '33333333-3333-4333-8333-333333333333'
  const envelopeOf = (payload: Record<string, unknown>): StoredEnvelope => ({
    ...commandEnvelope(AddItem, payload, { commandId }),
    sequence_number: 2,
  })
  const good = { cart_id: CART, sku: 'pen', quantity: 2 }

  test('gives back the command, its payload and its id', () => {
    const env = envelopeOf(good)
    assert.equal(env.event_type, 'ADD_ITEM_REQUESTED')
    assert.equal(env.metadata.kafka_topic, 'shopping_cart_commands')
    const parsed = parseCommandEnvelope(shop, env)
    assert.ok(parsed.ok)
    assert.equal(parsed.command, AddItem)
    assert.equal(parsed.commandId, commandId)
    assert.deepEqual(parsed.payload, good)
  })

  test('refuses a command stored on another aggregate than it targets', () => {
    const parsed = parseCommandEnvelope(shop, { ...envelopeOf(good), aggregate_id: 'c-other' })
    assert.deepEqual(parsed, {
      ok: false,
      reason: 'the command is for ShoppingCart c-1 but is stored in ShoppingCart c-other',
    })
    const wrongType = parseCommandEnvelope(shop, { ...envelopeOf(good), aggregate_type: 'Order' })
    assert.equal(wrongType.ok, false)
    assert.match(!wrongType.ok ? wrongType.reason : '', /is stored in Order c-1/)
  })

  test('refuses an unknown command type', () => {
    const env = envelopeOf(good)
    const parsed = parseCommandEnvelope(shop, {
      ...env,
      data: { ...env.data, command_type: 'EMPTY_CART' },
    })
    assert.deepEqual(parsed, { ok: false, reason: 'unknown command type "EMPTY_CART"' })
    const mismatched = parseCommandEnvelope(shop, { ...env, event_type: 'OPEN_CART_REQUESTED' })
    assert.equal(mismatched.ok, false)
    assert.match(!mismatched.ok ? mismatched.reason : '', /does not match command type ADD_ITEM/)
    const domainEvent = parseCommandEnvelope(shop, { ...env, metadata: { kind: 'domain' } })
    assert.deepEqual(domainEvent, { ok: false, reason: 'not a command envelope' })
  })

  test('refuses an invalid payload, with a JSON pointer into the envelope', () => {
    const parsed = parseCommandEnvelope(shop, envelopeOf({ ...good, quantity: 0 }))
    assert.equal(parsed.ok, false)
    assert.match(!parsed.ok ? parsed.reason : '', /^\/data\/payload\/quantity: /)
    const extra = parseCommandEnvelope(shop, envelopeOf({ ...good, colour: 'red' }))
    assert.equal(extra.ok, false)
    assert.match(!extra.ok ? extra.reason : '', /\/data\/payload\/colour: unknown field "colour"/)
  })

  test('problemsOf points at each problem', () => {
    assert.deepEqual(problemsOf(AddItem.schema, good), [])
    const problems = problemsOf(AddItem.schema, { cart_id: 'bad id', quantity: 'x', x: 1 })
    const pointers = problems.map((p) => p.pointer).sort()
    assert.ok(pointers.includes('/cart_id'), pointers.join(','))
    assert.ok(pointers.includes('/quantity'), pointers.join(','))
    assert.ok(pointers.includes('/x'), pointers.join(','))
    assert.ok(
      problems.some((p) => p.pointer === '/sku' && p.message === 'is required'),
      JSON.stringify(problems),
    )
  })
})

describe('given / when / then', () => {
  const opened = { type: 'CartOpened', data: { customer: 'Ada' } } as const

  test('passes when the decision is as expected', () => {
    given([opened])
      .when(AddItem, { cart_id: CART, sku: 'pen', quantity: 2 })
      .then([{ type: 'ItemAdded', data: { sku: 'pen', quantity: 2 } }])
    given([])
      .when(OpenCart, { cart_id: CART, customer: 'Ada' })
      .then([{ type: 'CartOpened', data: { customer: 'Ada' } }])
    given([opened, { type: 'CartCheckedOut', data: { item_count: 1 } }])
      .when(AddItem, { cart_id: CART, sku: 'pen', quantity: 2 })
      .thenRejected('CART_NOT_OPEN', 'the cart is checked_out')
    given([opened, { type: 'ItemAdded', data: { sku: 'pen', quantity: 2 } }])
      .when(CheckOut, { cart_id: CART })
      .then([{ type: 'CartCheckedOut', data: { item_count: 2 } }])
  })

  test('fails on other events, a rejection instead of events, and the reverse', () => {
    const add = given([opened]).when(AddItem, { cart_id: CART, sku: 'pen', quantity: 2 })
    assert.throws(
      () => add.then([{ type: 'ItemAdded', data: { sku: 'pen', quantity: 3 } }]),
      assert.AssertionError,
    )
    assert.throws(() => add.then([]), assert.AssertionError)
    assert.throws(() => add.thenRejected('CART_NOT_OPEN'), /expected a rejection CART_NOT_OPEN/)
    const empty = given([opened]).when(CheckOut, { cart_id: CART })
    assert.throws(() => empty.then([]), /expected events, got a rejection: CART_EMPTY/)
    assert.throws(() => empty.thenRejected('CART_NOT_OPEN'), assert.AssertionError)
    assert.throws(() => empty.thenRejected('CART_EMPTY', 'another reason'), assert.AssertionError)
    empty.thenRejected('CART_EMPTY', 'an empty cart cannot be checked out')
  })

  test('fails on a given event of another aggregate or off its schema, and on a bad payload', () => {
    assert.throws(
      () =>
        given([{ type: 'OrderPlaced', data: { cart_id: 'c', item_count: 1 } }]).when(CheckOut, {
          cart_id: CART,
        }),
      /given: OrderPlaced is not an event of ShoppingCart/,
    )
    assert.throws(
      () =>
        given([opened, { type: 'ItemAdded', data: { sku: 'pen', qty: 2 } }]).when(CheckOut, {
          cart_id: CART,
        }),
      /given: ItemAdded #2 does not match its schema/,
    )
    assert.throws(
      () => given([opened]).when(AddItem, { cart_id: CART, sku: 'pen', quantity: -1 }),
      /when: the ADD_ITEM payload does not match its schema: \/quantity/,
    )
  })
})
