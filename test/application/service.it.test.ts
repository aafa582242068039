import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { Admin } from '@platformatic/kafka'
import { createS3ObjectStore } from '../../src/adapters/object-store/s3/s3-object-store.ts'
import { createPgSql } from '../../src/adapters/sql/pg.ts'
import { reactionCommandId } from '../../src/application/decider.ts'
import { openService } from '../../src/application/service.ts'
import type { DomainService } from '../../src/application/service.ts'
import { loadConfig } from '../../src/config/env.ts'
import { silentLogger } from '../../src/core/ports/logger.ts'
import { dropBucket } from '../support/adapters.ts'
import { FAST_ENV } from '../support/embedded.ts'
import { databaseUrl, kafkaBrokers, s3Targets, uniqueName } from '../support/services.ts'
import { Cart, Order, orderIdOf, shop } from './fixtures.ts'
import type { CartRow } from './fixtures.ts'

const TOKEN = 'shop-token-0123456789abcdef'

type Json = Record<string, unknown>

describe('the shop domain distributed: MinIO, PostgreSQL and Kafka, via openService', () => {
  const minio = s3Targets()[0] as NonNullable<ReturnType<typeof s3Targets>[0]>
  const prefix = `${uniqueName('app')}.`
  const schema = uniqueName('cairn_app').replace(/-/g, '_')
  const bucket = uniqueName('cairn-app')
  const config = loadConfig({
    ...FAST_ENV,
    WORKER_COMMIT_INTERVAL_MS: '0',
    CAIRN_MODE: 'distributed',
    CAIRN_S3_ENDPOINT: minio.endpoint,
    CAIRN_S3_ACCESS_KEY_ID: minio.accessKeyId,
    CAIRN_S3_SECRET_ACCESS_KEY: minio.secretAccessKey,
    CAIRN_DATABASE_URL: databaseUrl(),
    CAIRN_KAFKA_BROKERS: kafkaBrokers().join(','),
    CAIRN_KAFKA_TOPIC_PREFIX: prefix,
    EVENT_STORE_BUCKET: bucket,
    EVENT_STORE_SEQUENCE_SCHEMA: schema,
    OMS_API_TOKENS: TOKEN,
  })
  let svc: DomainService | undefined

  before(async () => {
    svc = await openService({ domain: shop, config, logger: silentLogger })
  })

  after(async () => {
    await svc?.close()
    const sql = createPgSql({ connectionString: databaseUrl() })
    try {
      await sql.exec(`DROP SCHEMA IF EXISTS ${schema} CASCADE`)
    } finally {
      await sql.close()
    }
    const admin = new Admin({ clientId: 'cairn-test-cleanup', bootstrapBrokers: kafkaBrokers() })
    try {
      const groups = [...(await admin.listGroups()).keys()].filter((g) => g.startsWith(prefix))
      if (groups.length > 0) await admin.deleteGroups({ groups }).catch(() => {})
      const topics = (await admin.listTopics()).filter((t) => t.startsWith(prefix))
      if (topics.length > 0) await admin.deleteTopics({ topics })
    } finally {
      await admin.close()
    }
    const store = await createS3ObjectStore({
      endpoint: minio.endpoint,
      region: minio.region,
      credentials: { accessKeyId: minio.accessKeyId, secretAccessKey: minio.secretAccessKey },
      bucket,
      createBucket: false,
    })
    try {
      await dropBucket(store)
    } finally {
      await store.close()
    }
  })

  const request = async (method: string, url: string, body?: unknown, token = TOKEN) => {
    const response = await (svc as DomainService).app.handle({
      method,
      url,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? null : new TextEncoder().encode(JSON.stringify(body)),
    })
    return {
      status: response.status,
      body: (response.body === '' ? {} : JSON.parse(response.body)) as Json,
    }
  }

  /** Polls the command's status route until it is terminal. */
  const settled = async (commandId: string, deadline: number): Promise<Json> => {
    for (;;) {
      const r = await request('GET', `/api/v1/commands/${commandId}`)
      assert.equal(r.status, 200, JSON.stringify(r.body))
      if (r.body['status'] === 'COMPLETED' || r.body['status'] === 'FAILED') return r.body
      if (Date.now() > deadline) assert.fail(`command ${commandId}: ${JSON.stringify(r.body)}`)
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }

  const accepted = async (url: string, body: unknown, deadline: number): Promise<Json> => {
    const r = await request('POST', url, body)
    assert.equal(r.status, 202, `POST ${url}: ${JSON.stringify(r.body)}`)
    return settled(String(r.body['command_id']), deadline)
  }

  test(
    'commands over HTTP are decided by the workers; the process manager and the projection follow',
    {
      timeout: 60_000,
    },
    async () => {
      const s = svc as DomainService
      const deadline = Date.now() + 50_000
      assert.equal((await request('POST', '/api/v1/carts', {}, 'wrong-token')).status, 401)

      const opened = await accepted('/api/v1/carts', { cart_id: 'd1', customer: 'Ada' }, deadline)
      assert.equal(opened['status'], 'COMPLETED', JSON.stringify(opened))
      const added = await accepted('/api/v1/carts/d1/items', { sku: 'pen', quantity: 3 }, deadline)
      assert.equal(added['status'], 'COMPLETED', JSON.stringify(added))
      const empty = await accepted('/api/v1/carts', { cart_id: 'd2', customer: 'Ada' }, deadline)
      assert.equal(empty['status'], 'COMPLETED')
      const refused = await accepted('/api/v1/carts/d2/checkout', {}, deadline)
      assert.equal(refused['status'], 'FAILED')
      assert.deepEqual(refused['error'], {
        code: 'CART_EMPTY',
        message: 'an empty cart cannot be checked out',
      })

      const checkout = await accepted('/api/v1/carts/d1/checkout', {}, deadline)
      assert.equal(checkout['status'], 'COMPLETED')
      const checkedOut = (await s.ws.eventStore.readStream(Cart.type, 'd1')).find(
        (e) => e.event_type === 'CartCheckedOut',
      )
      assert.deepEqual(checkedOut?.data, { item_count: 3 })

      // The process manager's follow-up command, with its deterministic id, decided by the worker.
      const placeOrder = reactionCommandId('checkout', checkedOut?.event_id ?? '', 0)
      const order = await settled(placeOrder, deadline)
      assert.equal(order['status'], 'COMPLETED', JSON.stringify(order))
      assert.equal(order['command_type'], 'PLACE_ORDER')
      assert.equal(order['aggregate_id'], orderIdOf('d1'))
      assert.equal((await s.outcome(placeOrder))?.outcome, 'completed')
      assert.deepEqual(await s.load(Order, orderIdOf('d1')), {
        state: { placed: true },
        sequence: 2,
      })

      // The projection, through the query route, once it caught up with the order.
      let row: Json = {}
      for (;;) {
        const r = await request('GET', '/api/v1/carts/d1')
        row = r.body
        if (r.status === 200 && row['order_id'] !== null) break
        if (Date.now() > deadline) assert.fail(`the cart row: ${r.status} ${JSON.stringify(row)}`)
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
      const expected: CartRow = {
        id: 'd1',
        customer: 'Ada',
        items: 3,
        status: 'checked_out',
        order_id: orderIdOf('d1'),
        seq: 6,
      }
      assert.deepEqual(row, expected)
      assert.deepEqual(await s.query('cart', { cart_id: 'd1' }), expected)
      const listing = await request('GET', '/api/v1/carts?customer=Ada')
      assert.deepEqual(
        (listing.body['carts'] as CartRow[]).map((c) => [c.id, c.status]),
        [
          ['d1', 'checked_out'],
          ['d2', 'open'],
        ],
      )
      // One order only, however the events were delivered.
      assert.equal((await s.ws.eventStore.readStream(Order.type, orderIdOf('d1'))).length, 2)
    },
  )
})
