import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { createCommandProcessor, decideInline } from '../../src/application/command-processor.ts'
import { COMMAND_REJECTED, reactionCommandId } from '../../src/application/decider.ts'
import { createProcessManagerHandler, handlerNames } from '../../src/application/reactions.ts'
import { createEnvelope } from '../../src/core/envelope.ts'
import type { StoredEnvelope } from '../../src/core/envelope.ts'
import type { EventStore } from '../../src/event-store/event-store.ts'
import { createProcessedEventRegistry } from '../../src/registry/processed-events.ts'
import { fsStoreCase } from '../support/adapters.ts'
import { makeWriteSide } from '../support/write-side.ts'
import type { WriteSide } from '../support/write-side.ts'
import { Cart, Checkout, OpenCart, Order, orderIdOf, shop } from './fixtures.ts'
import { handlerCtx, storeCommand, streamTypes } from './helpers.ts'

describe('command processor without workers (filesystem + PGlite)', () => {
  let side: WriteSide
  let es: EventStore
  before(async () => {
    side = await makeWriteSide(fsStoreCase(), 'pglite')
    es = side.store()
  })
  after(() => side.close())

  const store = (
    command: Parameters<typeof storeCommand>[1],
    payload: Record<string, unknown>,
    commandId: string,
  ): Promise<StoredEnvelope> => storeCommand(es, command, payload, commandId)

  test('the same stored command processed twice is decided once', async () => {
    const processor = createCommandProcessor({ domain: shop, eventStore: es })
    const open = await store(
      OpenCart,
      { cart_id: 'p1', customer: 'Ada' },
      'a0000000-0000-4000-8000-000000000001',
    )
    const first = await processor.process(open)
    assert.equal(first.outcome, 'completed')
    assert.deepEqual(
      first.events.map((e) => [e.event_type, e.sequence_number]),
      [['CartOpened', 2]],
    )
    assert.equal(await es.currentSequence(Cart.type, 'p1'), 2)
    const second = await processor.process(open)
    assert.deepEqual(second, first)
    // A processor that never saw it (another worker, after a crash) finds the stored outcome.
    const other = await createCommandProcessor({ domain: shop, eventStore: es }).process(open)
    assert.deepEqual(other, first)
    assert.equal(await es.currentSequence(Cart.type, 'p1'), 2)
    assert.deepEqual(await streamTypes(es, Cart.type, 'p1'), ['>OPEN_CART_REQUESTED', 'CartOpened'])
  })

  test('a rejection is stored once, and a command that cannot be read is rejected unstored', async () => {
    const processor = createCommandProcessor({ domain: shop, eventStore: es })
    const again = await store(
      OpenCart,
      { cart_id: 'p1', customer: 'Bob' },
      'a0000000-0000-4000-8000-000000000002',
    )
    const first = await processor.process(again)
    assert.equal(first.outcome, 'rejected')
    assert.equal(first.code, 'CART_EXISTS')
    assert.deepEqual(await processor.process(again), first)
    assert.deepEqual(await streamTypes(es, Cart.type, 'p1'), [
      '>OPEN_CART_REQUESTED',
      'CartOpened',
      '>OPEN_CART_REQUESTED',
      COMMAND_REJECTED,
    ])

    const misfiled = { ...again, aggregate_id: 'p2' }
    const result = await processor.process(misfiled)
    assert.equal(result.outcome, 'rejected')
    assert.equal(result.code, 'INVALID_COMMAND')
    assert.match(result.reason ?? '', /is for ShoppingCart p1 but is stored in ShoppingCart p2/)
    assert.equal(await es.currentSequence(Cart.type, 'p2'), 0)
  })

  test('processors deciding one command at once store one decision, and agree on it', async () => {
    const open = await store(
      OpenCart,
      { cart_id: 'p3', customer: 'Ada' },
      'a0000000-0000-4000-8000-000000000003',
    )
    const processors = [1, 2, 3].map(() => createCommandProcessor({ domain: shop, eventStore: es }))
    const results = await Promise.all(processors.map((p) => p.process(open)))
    for (const r of results) assert.deepEqual(r, results[0])
    assert.equal(results[0]?.outcome, 'completed')
    assert.deepEqual(await streamTypes(es, Cart.type, 'p3'), ['>OPEN_CART_REQUESTED', 'CartOpened'])
  })

  test('a process manager handler stores the commands of one event once', async () => {
    const checkedOut = (
      await es.append({
        envelopes: [
          createEnvelope({
            event_type: 'CartCheckedOut',
            aggregate_type: Cart.type,
            aggregate_id: 'p1',
            data: { item_count: 4 },
            metadata: { kind: 'domain', correlation_id: 'corr-1' },
          }),
        ],
      })
    ).envelopes[0] as StoredEnvelope
    const handle = createProcessManagerHandler({
      domain: shop,
      processManager: Checkout,
      eventStore: es,
    })
    const expected = { commands: [reactionCommandId('checkout', checkedOut.event_id, 0)] }
    assert.deepEqual(await handle(checkedOut, handlerCtx), expected)
    assert.deepEqual(await handle(checkedOut, handlerCtx), expected)
    const orders = await es.readStream(Order.type, orderIdOf('p1'))
    assert.equal(orders.length, 1)
    const [command] = orders
    assert.equal(command?.event_id, expected.commands[0])
    assert.equal(command?.metadata.kind, 'command')
    assert.equal(command?.metadata.correlation_id, 'corr-1')
    assert.equal(command?.metadata.service, 'shop:process:checkout')
    assert.deepEqual(command?.data['payload'], {
      order_id: 'order-p1',
      cart_id: 'p1',
      item_count: 4,
    })
    // Another aggregate's event of the same name is not the process manager's.
    const foreign = { ...checkedOut, aggregate_type: 'Wishlist', event_id: 'f-1' }
    assert.deepEqual(await handle(foreign, handlerCtx), { ignored: true })
  })

  test('inline: a command the worker claimed first is answered with the outcome the worker decided', async () => {
    const handler = handlerNames(shop).commands
    const registryOf = (member: string) =>
      createProcessedEventRegistry({ sql: side.sql, schema: side.schema, member })
    const worker = registryOf('worker@test')
    const oms = registryOf('oms@test')
    await worker.start()
    await oms.start()
    try {
      const processor = createCommandProcessor({ domain: shop, eventStore: es })
      const stored = await storeCommand(
        es,
        OpenCart,
        { cart_id: 'raced', customer: 'Ada' },
        'a0000000-0000-4000-8000-0000000000f1',
      )
      const claim = {
        eventId: stored.event_id,
        aggregateType: stored.aggregate_type,
        aggregateId: stored.aggregate_id,
        seq: stored.sequence_number,
      }
      assert.equal((await worker.claim(handler, [claim])).get(stored.event_id), 'claimed')
      const answer = decideInline(processor, oms, handler, stored)
      // The worker decides while the OMS waits for it.
      await new Promise((r) => setTimeout(r, 100))
      const result = await processor.process(stored)
      await worker.markDone(handler, [{ eventId: stored.event_id, result }])
      assert.deepEqual(await answer, result)
      assert.deepEqual(await streamTypes(es, Cart.type, 'raced'), [
        '>OPEN_CART_REQUESTED',
        'CartOpened',
      ])
    } finally {
      await oms.stop()
      await worker.stop()
    }
  })
})
