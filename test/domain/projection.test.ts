import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, before, describe, test } from 'node:test'
import { createInProcessBus } from '../../src/adapters/bus/in-process-bus.ts'
import { migrate } from '../../src/adapters/sql/migrations.ts'
import { createEnvelope } from '../../src/core/envelope.ts'
import type { StoredEnvelope } from '../../src/core/envelope.ts'
import type { Bus } from '../../src/core/ports/bus.ts'
import { createCommandHandler, expectedSeqForCreate } from '../../src/domain/command-handler.ts'
import type { CommandResult } from '../../src/domain/command-handler.ts'
import {
  commandEnvelope,
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
import { GROUPS, HANDLERS, TOPICS, commandHandlerFor } from '../../src/domain/model.ts'
import { createProjection, createProjectionHandler } from '../../src/domain/projection.ts'
import {
  getClass,
  getDatabase,
  getInstance,
  isValidCursor,
  listClasses,
  listDatabases,
  listInstances,
  parseInstanceFilter,
} from '../../src/domain/read-model.ts'
import type { EventStore } from '../../src/event-store/event-store.ts'
import { databaseClock } from '../../src/sequencing/allocator.ts'
import { createPublisher } from '../../src/publisher/publisher.ts'
import type { Publisher } from '../../src/publisher/publisher.ts'
import { createProcessedEventRegistry } from '../../src/registry/processed-events.ts'
import type { ProcessedEventRegistry } from '../../src/registry/processed-events.ts'
import { createWorker } from '../../src/worker/worker.ts'
import type { Handle, HandleBatch, Worker } from '../../src/worker/worker.ts'
import { fsStoreCase } from '../support/adapters.ts'
import { eventually } from '../support/collect.ts'
import { makeWriteSide } from '../support/write-side.ts'
import type { WriteSide } from '../support/write-side.ts'

const ok = (p: Parsed<DomainCommand>): DomainCommand => {
  if (!p.ok) assert.fail(JSON.stringify(p.problems))
  return p.value
}

void describe('the domain end to end: OMS-style appends → publisher → workers → projection → read model', () => {
  let side: WriteSide
  let es: EventStore
  let bus: Bus
  let publisher: Publisher
  let registry: ProcessedEventRegistry
  const workers: Worker[] = []

  before(async () => {
    side = await makeWriteSide(fsStoreCase(), 'pglite')
    es = side.store()
    bus = createInProcessBus()
    await bus.ensureTopics(
      [
        ...Object.values(TOPICS),
        'ontology-commands-dlq',
        'instance-commands-dlq',
        'projection-dlq',
      ].map((name) => ({ name, partitions: 3 })),
    )
    publisher = createPublisher({
      objectStore: side.objectStore,
      bus,
      keyClock: databaseClock(side.sql),
      pollIntervalMs: 100,
      settleMs: 400,
      heartbeatMs: 200,
      takeoverAfterMs: 1_000,
      metricsLogIntervalMs: 60_000,
    })
    es.onCommit((notice) => publisher.noteCommit(notice))
    void publisher.run()
    const start = (
      handler: string,
      groupId: string,
      topics: string[],
      handle: Handle | { readonly handle: Handle; readonly handleBatch: HandleBatch },
      dlqTopic: string,
      transactional: boolean,
    ): void => {
      const reg = createProcessedEventRegistry({
        sql: side.sql,
        schema: side.schema,
        member: handler,
        leaseMs: 10_000,
      })
      const worker = createWorker({
        bus,
        registry: reg,
        handler,
        topics,
        groupId,
        ...(typeof handle === 'function' ? { handle } : handle),
        dlqTopic,
        ...(transactional ? { transactional: side.sql } : {}),
        heartbeatMs: 1_000,
        pollWaitMs: 100,
        backoffBaseMs: 20,
        backoffMaxMs: 200,
      })
      workers.push(worker)
      void worker.run()
    }
    const commands = createCommandHandler({ eventStore: es })
    start(
      HANDLERS.ontology,
      GROUPS.ontology,
      [TOPICS.databaseCommands, TOPICS.ontologyCommands],
      commands,
      'ontology-commands-dlq',
      false,
    )
    start(
      HANDLERS.instance,
      GROUPS.instance,
      [TOPICS.instanceCommands],
      commands,
      'instance-commands-dlq',
      false,
    )
    start(
      HANDLERS.projection,
      GROUPS.projection,
      [TOPICS.ontologyEvents, TOPICS.instanceEvents],
      createProjection({ schema: side.schema }),
      'projection-dlq',
      true,
    )
    registry = createProcessedEventRegistry({
      sql: side.sql,
      schema: side.schema,
      member: 'observer',
    })
  })

  after(async () => {
    for (const w of workers) await w.close()
    await publisher.close()
    await bus.close()
    await side.close()
  })

  /** Submits a command as the OMS does; creates take their expected sequence from the stream. */
  const submit = async (cmd: DomainCommand, expectedSeq?: number): Promise<StoredEnvelope> => {
    const commandId = randomUUID()
    const expected = expectedSeq ?? (await expectedSeqForCreate(es, cmd))
    const { envelopes } = await es.append({
      envelopes: [commandEnvelope(cmd, { commandId, expectedSeq: expected, actor: 'tester' })],
      expectedSeq: expected,
    })
    assert.ok(envelopes[0])
    return envelopes[0]
  }

  /** Waits until the command is decided and its event projected; returns the decision. */
  const settle = async (command: StoredEnvelope): Promise<CommandResult> => {
    const handler = commandHandlerFor(command.aggregate_type)
    let result: CommandResult | undefined
    await eventually(async () => {
      const row = (await registry.status(command.event_id)).find((r) => r.handler === handler)
      if (row?.status !== 'done') return false
      result = row.result as CommandResult
      return true
    }, `command ${command.event_type} decided`)
    assert.ok(result)
    for (const e of result.events) {
      await eventually(async () => {
        const rows = await registry.status(e.event_id)
        return rows.some((r) => r.handler === HANDLERS.projection && r.status === 'done')
      }, `${e.event_type} projected`)
    }
    return result
  }

  const run = async (cmd: DomainCommand, expectedSeq?: number): Promise<CommandResult> =>
    settle(await submit(cmd, expectedSeq))

  const rm = () => ({ sql: side.sql, schema: side.schema })

  test('databases, classes and instances reach the read model with the seq of their latest event', async () => {
    const { sql, schema } = rm()
    assert.equal(
      (await run(ok(parseCreateDatabase({ name: 'shop', description: 'A shop' })))).outcome,
      'completed',
    )
    const shop = await getDatabase(sql, schema, 'shop')
    assert.equal(shop?.name, 'shop')
    assert.equal(shop?.description, 'A shop')
    assert.equal(shop?.seq, 2)
    assert.match(shop?.created_at ?? '', /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/)

    await run(
      ok(
        parseCreateClass('shop', {
          id: 'Company',
          properties: [{ name: 'name', type: 'string', required: true }],
        }),
      ),
    )
    await run(
      ok(
        parseCreateClass('shop', {
          id: 'Product',
          label: 'Product',
          properties: [
            { name: 'sku', type: 'string', required: true },
            { name: 'qty', type: 'integer' },
            { name: 'price', type: 'number' },
            { name: 'active', type: 'boolean' },
            { name: 'maker', type: 'reference', target_class: 'Company' },
          ],
        }),
      ),
    )
    const classes = await listClasses(sql, schema, 'shop', { limit: 10 })
    assert.deepEqual(
      classes.items.map((c) => [c.id, c.seq]),
      [
        ['Company', 2],
        ['Product', 2],
      ],
    )
    assert.equal(classes.next, null)
    const product = await getClass(sql, schema, 'shop', 'Product')
    assert.equal(product?.properties.length, 5)
    assert.deepEqual(product?.properties[4], {
      name: 'maker',
      type: 'reference',
      required: false,
      target_class: 'Company',
    })

    await run(
      ok(
        parseCreateInstance(
          'shop',
          'Company',
          { id: 'acme', data: { name: 'ACME' } },
          randomUUID(),
        ),
      ),
    )
    const made = await Promise.all(
      [1, 2, 3, 4, 5].map((n) =>
        submit(
          ok(
            parseCreateInstance(
              'shop',
              'Product',
              {
                id: `P-${n}`,
                data: { sku: `s-${n}`, qty: n % 2, active: n > 3, price: n / 2, maker: 'acme' },
              },
              randomUUID(),
            ),
          ),
        ),
      ),
    )
    for (const c of made) assert.equal((await settle(c)).outcome, 'completed')

    // Paging by id, two at a time.
    const seen: string[] = []
    let after: string | undefined
    for (let pages = 0; pages < 10; pages++) {
      const page = await listInstances(sql, schema, 'shop', 'Product', {
        limit: 2,
        ...(after === undefined ? {} : { after }),
      })
      seen.push(...page.items.map((i) => i.id))
      assert.ok(page.items.length <= 2)
      if (page.next === null) break
      assert.ok(isValidCursor(page.next))
      after = page.next
    }
    assert.deepEqual(seen, ['P-1', 'P-2', 'P-3', 'P-4', 'P-5'])
    assert.deepEqual(
      await listInstances(sql, schema, 'shop', 'Product', { limit: 2, after: '%%' }),
      {
        items: [],
        next: null,
      },
    )

    // Filters are typed per the class.
    assert.ok(product)
    const filtered = async (query: Record<string, string>): Promise<string[]> => {
      const f = parseInstanceFilter(product, query)
      if (!f.ok) assert.fail(JSON.stringify(f.problems))
      return (
        await listInstances(sql, schema, 'shop', 'Product', { limit: 50, filter: f.value })
      ).items.map((i) => i.id)
    }
    assert.deepEqual(await filtered({ qty: '1' }), ['P-1', 'P-3', 'P-5'])
    assert.deepEqual(await filtered({ qty: '1', active: 'true' }), ['P-5'])
    assert.deepEqual(await filtered({ sku: 's-2' }), ['P-2'])
    assert.deepEqual(await filtered({ price: '1.5' }), ['P-3'])
    assert.deepEqual(await filtered({ maker: 'acme' }), ['P-1', 'P-2', 'P-3', 'P-4', 'P-5'])
    assert.deepEqual(await filtered({}), ['P-1', 'P-2', 'P-3', 'P-4', 'P-5'])
    const bad = parseInstanceFilter(product, { qty: 'one', colour: 'red', active: 'yes' })
    assert.equal(bad.ok, false)
    if (!bad.ok) {
      assert.deepEqual(
        bad.problems.map((p) => p.pointer),
        ['#/query/qty', '#/query/colour', '#/query/active'],
      )
      assert.match(bad.problems[1]?.message ?? '', /"colour" is not a property of class "Product"/)
    }

    // An update with the seq read back; a rejected update moves seq but not the state.
    const p1 = await getInstance(sql, schema, 'shop', 'Product', 'P-1')
    assert.equal(p1?.seq, 2)
    assert.deepEqual(p1?.data, { active: false, maker: 'acme', price: 0.5, qty: 1, sku: 's-1' })
    const upd = await run(
      ok(parseUpdateInstance('shop', 'Product', 'P-1', { data: { qty: 7, price: null } })),
      2,
    )
    assert.equal(upd.outcome, 'completed')
    const p1b = await getInstance(sql, schema, 'shop', 'Product', 'P-1')
    assert.equal(p1b?.seq, 4)
    assert.deepEqual(p1b?.data, { active: false, maker: 'acme', qty: 7, sku: 's-1' })
    assert.equal(p1b?.created_at, p1?.created_at)
    const rejected = await run(
      ok(parseUpdateInstance('shop', 'Product', 'P-1', { data: { qty: 'x' } })),
      4,
    )
    assert.equal(rejected.outcome, 'rejected')
    assert.equal(rejected.code, 'validation_failed')
    const p1c = await getInstance(sql, schema, 'shop', 'Product', 'P-1')
    assert.equal(p1c?.seq, 6)
    assert.deepEqual(p1c?.data, p1b?.data)
    const dangling = await run(
      ok(parseUpdateInstance('shop', 'Product', 'P-1', { data: { maker: 'nobody' } })),
      6,
    )
    assert.equal(dangling.code, 'dangling_reference')

    // Class update; instance delete.
    await run(ok(parseUpdateClass('shop', 'Company', { label: 'Firm' })), 2)
    assert.equal((await getClass(sql, schema, 'shop', 'Company'))?.label, 'Firm')
    assert.equal((await getClass(sql, schema, 'shop', 'Company'))?.seq, 4)
    await run(ok(parseDeleteInstance('shop', 'Product', 'P-2')), 2)
    assert.equal(await getInstance(sql, schema, 'shop', 'Product', 'P-2'), null)
    assert.equal(
      (await listInstances(sql, schema, 'shop', 'Product', { limit: 50 })).items.length,
      4,
    )
  })

  test('deleting a class or a database takes its children; re-creating starts empty', async () => {
    const { sql, schema } = rm()
    await run(ok(parseCreateDatabase({ name: 'zoo' })))
    await run(
      ok(parseCreateClass('zoo', { id: 'Animal', properties: [{ name: 'n', type: 'integer' }] })),
    )
    await run(ok(parseCreateClass('zoo', { id: 'Keeper' })))
    for (const id of ['a1', 'a2']) {
      await run(ok(parseCreateInstance('zoo', 'Animal', { id, data: { n: 1 } }, randomUUID())))
    }
    assert.equal((await listInstances(sql, schema, 'zoo', 'Animal', { limit: 10 })).items.length, 2)

    await run(ok(parseDeleteClass('zoo', 'Animal')), 2)
    assert.equal(await getClass(sql, schema, 'zoo', 'Animal'), null)
    assert.equal((await listInstances(sql, schema, 'zoo', 'Animal', { limit: 10 })).items.length, 0)
    // Re-created: empty, and the old instances do not come back (their class generation is gone).
    const recreated = await run(ok(parseCreateClass('zoo', { id: 'Animal', properties: [] })))
    assert.equal(recreated.outcome, 'completed')
    assert.equal(recreated.events[0]?.sequence_number, 6)
    assert.equal((await listInstances(sql, schema, 'zoo', 'Animal', { limit: 10 })).items.length, 0)
    const again = await run(ok(parseUpdateInstance('zoo', 'Animal', 'a1', { data: { n: 2 } })), 2)
    assert.equal(again.code, 'not_found')
    await run(ok(parseCreateInstance('zoo', 'Animal', { id: 'a3', data: {} }, randomUUID())))

    await run(ok(parseDeleteDatabase('zoo')), 2)
    assert.equal(await getDatabase(sql, schema, 'zoo'), null)
    assert.deepEqual((await listClasses(sql, schema, 'zoo', { limit: 10 })).items, [])
    assert.deepEqual((await listInstances(sql, schema, 'zoo', 'Animal', { limit: 10 })).items, [])
    const names = (await listDatabases(sql, schema, { limit: 100 })).items.map((d) => d.name)
    assert.ok(!names.includes('zoo'))

    const reborn = await run(ok(parseCreateDatabase({ name: 'zoo' })))
    assert.equal(reborn.events[0]?.sequence_number, 6)
    assert.equal((await getDatabase(sql, schema, 'zoo'))?.seq, 6)
    assert.deepEqual((await listClasses(sql, schema, 'zoo', { limit: 10 })).items, [])
    // The class's stream still ends with a create, but under the old generation: create it again.
    const cls = await run(ok(parseCreateClass('zoo', { id: 'Keeper' })))
    assert.equal(cls.outcome, 'completed')
    assert.equal((await listClasses(sql, schema, 'zoo', { limit: 10 })).items.length, 1)
    const inst = await run(
      ok(parseCreateInstance('zoo', 'Animal', { id: 'a9', data: {} }, randomUUID())),
    )
    assert.equal(inst.code, 'class_not_found')
  })
})

void describe('the projection handler on its own', () => {
  let side: WriteSide
  before(async () => {
    side = await makeWriteSide(fsStoreCase(), 'pglite')
  })
  after(async () => {
    await side.close()
  })

  const ev = (
    aggregate_type: string,
    aggregate_id: string,
    event_type: string,
    seq: number,
    data: Record<string, unknown>,
  ): StoredEnvelope => ({
    ...createEnvelope({
      event_type,
      aggregate_type,
      aggregate_id,
      data,
      metadata: { kind: 'domain' },
    }),
    sequence_number: seq,
  })

  test('the batch form leaves the read model the one-by-one handler leaves', async () => {
    const { sql } = side
    const live = async (schema: string) => ({
      dbs: await sql.query(`SELECT name, description, seq FROM ${schema}.rm_databases ORDER BY 1`),
      classes: await sql.query(
        `SELECT c.db, c.id, c.label, c.properties, c.seq FROM ${schema}.rm_classes c
           JOIN ${schema}.rm_databases d ON d.name = c.db AND d.generation = c.db_generation
          ORDER BY 1, 2`,
      ),
      instances: await sql.query(
        `SELECT i.db, i.class_id, i.id, i.data, i.seq, i.created_at, i.updated_at
           FROM ${schema}.rm_instances i
           JOIN ${schema}.rm_classes c ON c.db = i.db AND c.id = i.class_id
            AND c.generation = i.class_generation
           JOIN ${schema}.rm_databases d ON d.name = c.db AND d.generation = c.db_generation
          ORDER BY 1, 2, 3`,
      ),
    })
    // Per aggregate, its events in sequence order; a round takes the next event of each (as the
    // claims do), in an order that mixes the aggregates.
    const streams: StoredEnvelope[][] = [
      [ev('Database', 'b', 'DATABASE_CREATED', 1, { generation: 1 })],
      [
        ev('Database', 'gone', 'DATABASE_CREATED', 1, { generation: 1 }),
        ev('Database', 'gone', 'DATABASE_DELETED', 2, { generation: 1 }),
        ev('Database', 'gone', 'DATABASE_CREATED', 3, { generation: 3 }),
      ],
      [
        ev('OntologyClass', 'b:K', 'ONTOLOGY_CLASS_CREATED', 1, {
          db_name: 'b',
          class_id: 'K',
          label: 'K',
          properties: [],
          generation: 1,
          db_generation: 1,
        }),
        ev('OntologyClass', 'b:K', 'ONTOLOGY_CLASS_UPDATED', 2, {
          db_name: 'b',
          class_id: 'K',
          label: 'K2',
          properties: [],
          generation: 1,
          db_generation: 1,
        }),
      ],
      ...Array.from({ length: 12 }, (_, i) => {
        const data = (seq: number, n: number) => ({
          db_name: 'b',
          class_id: 'K',
          instance_id: `i${i}`,
          data: { n },
          class_generation: 1,
          db_generation: 1,
          seq,
        })
        const out = [ev('Instance', `b:K:i${i}`, 'INSTANCE_CREATED', 1, data(1, i))]
        if (i % 2 === 0) out.push(ev('Instance', `b:K:i${i}`, 'INSTANCE_UPDATED', 2, data(2, -i)))
        if (i % 3 === 0) out.push(ev('Instance', `b:K:i${i}`, 'INSTANCE_DELETED', 3, data(3, 0)))
        if (i % 4 === 0) out.push(ev('Instance', `b:K:i${i}`, 'INSTANCE_CREATED', 4, data(4, 9)))
        return out
      }),
    ]
    // Distinct times, so that a created_at taken from the wrong event shows.
    let tick = 0
    const timed = streams.map((st) =>
      st.map((e) => ({
        ...e,
        occurred_at: new Date(Date.UTC(2026, 0, 1, 0, 0, tick++)).toISOString(),
      })),
    )
    const rounds: StoredEnvelope[][] = []
    for (let r = 0; timed.some((s) => s[r] !== undefined); r++) {
      const round = timed.flatMap((s) => s.slice(r, r + 1))
      rounds.push(round.reverse())
    }
    const signal = new AbortController().signal
    const applyAll = async (batched: boolean): Promise<string> => {
      const schema = `proj_${batched ? 'batch' : 'one'}_${randomUUID().slice(0, 8)}`
      await migrate(sql, schema)
      const p = createProjection({ schema })
      for (const round of rounds) {
        await sql.transaction(async (tx) => {
          if (batched) {
            const results = await p.handleBatch(round, { tx, attempt: 1, signal })
            assert.equal(results.length, round.length)
          } else {
            for (const e of round) await p.handle(e, { tx, attempt: 1, signal })
          }
        })
      }
      return schema
    }
    const one = await live(await applyAll(false))
    const batch = await live(await applyAll(true))
    assert.deepEqual(batch, one)
    // i0, i3, i6, i9 deleted; i0 created again.
    assert.equal(one.instances.length, 9, 'deleted ones gone, the re-created one back')
    assert.equal(one.dbs.length, 2)
  })

  test('writes only in the transaction, moves seq only upwards, hides late events of a gone generation', async () => {
    const { sql, schema } = side
    const project = createProjectionHandler({ schema })
    const apply = (e: StoredEnvelope) =>
      sql.transaction((tx) => project(e, { tx, attempt: 1, signal: new AbortController().signal }))
    await assert.rejects(
      project(ev('Database', 'd', 'DATABASE_CREATED', 2, {}), {
        tx: undefined,
        attempt: 1,
        signal: new AbortController().signal,
      }),
      /transactional/,
    )
    await assert.rejects(
      apply({ ...ev('Database', 'd', 'X', 1, {}), metadata: { kind: 'command' } }),
      /domain events only/,
    )

    await apply(
      ev('Database', 'd', 'DATABASE_CREATED', 2, {
        db_name: 'd',
        description: 'one',
        generation: 2,
      }),
    )
    const cls = { db_name: 'd', class_id: 'C', properties: [], db_generation: 2, generation: 2 }
    await apply(ev('OntologyClass', 'd:C', 'ONTOLOGY_CLASS_CREATED', 2, cls))
    const inst = (seq: number, n: number) =>
      ev('Instance', 'd:C:i', seq === 2 ? 'INSTANCE_CREATED' : 'INSTANCE_UPDATED', seq, {
        db_name: 'd',
        class_id: 'C',
        instance_id: 'i',
        data: { n },
        class_generation: 2,
        db_generation: 2,
      })
    await apply(inst(2, 1))
    await apply(inst(4, 2))
    await apply(inst(2, 1)) // again, older: no effect
    await apply(inst(4, 3)) // same seq again: no effect
    const got = await getInstance(sql, schema, 'd', 'C', 'i')
    assert.equal(got?.seq, 4)
    assert.deepEqual(got?.data, { n: 2 })
    await apply(
      ev('Instance', 'd:C:i', 'COMMAND_REJECTED', 6, {
        db_name: 'd',
        class_id: 'C',
        instance_id: 'i',
      }),
    )
    assert.equal((await getInstance(sql, schema, 'd', 'C', 'i'))?.seq, 6)
    await apply(ev('Database', 'd', 'COMMAND_REJECTED', 4, { db_name: 'd' }))
    assert.equal((await getDatabase(sql, schema, 'd'))?.seq, 4)

    // The database is deleted and re-created; then a late event of the old generation arrives.
    await apply(ev('Database', 'd', 'DATABASE_DELETED', 6, { db_name: 'd', generation: 2 }))
    await apply(
      ev('Database', 'd', 'DATABASE_CREATED', 8, {
        db_name: 'd',
        description: 'two',
        generation: 8,
      }),
    )
    await apply(ev('OntologyClass', 'd:C', 'ONTOLOGY_CLASS_UPDATED', 4, { ...cls, label: 'late' }))
    await apply(inst(8, 9))
    assert.equal(await getClass(sql, schema, 'd', 'C'), null)
    assert.equal(await getInstance(sql, schema, 'd', 'C', 'i'), null)
    assert.equal((await getDatabase(sql, schema, 'd'))?.description, 'two')
    const counted = await sql.query<{ n: string | number }>(
      `SELECT count(*) AS n FROM ${schema}.rm_instances`,
    )
    assert.equal(Number(counted[0]?.n), 1) // stored, but invisible
    // The filter index exists.
    const idx = await sql.query(
      `SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND indexname = 'rm_instances_data'`,
      [schema],
    )
    assert.equal(idx.length, 1)
  })
})
