import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, before, test } from 'node:test'
import { createEnvelope } from '../../src/core/envelope.ts'
import type { StoredEnvelope } from '../../src/core/envelope.ts'
import { isCairnError } from '../../src/core/errors.ts'
import { createCommandHandler, expectedSeqForCreate } from '../../src/domain/command-handler.ts'
import type { CommandResult } from '../../src/domain/command-handler.ts'
import {
  commandEnvelope,
  commandTarget,
  parseCreateClass,
  parseCreateDatabase,
  parseCreateInstance,
  parseDeleteDatabase,
  parseUpdateInstance,
} from '../../src/domain/commands.ts'
import type { DomainCommand, Parsed } from '../../src/domain/commands.ts'
import type { EventStore } from '../../src/event-store/event-store.ts'
import type { HandlerContext } from '../../src/worker/worker.ts'
import { fsStoreCase } from '../support/adapters.ts'
import { makeWriteSide } from '../support/write-side.ts'
import type { WriteSide } from '../support/write-side.ts'

let side: WriteSide
let es: EventStore

before(async () => {
  side = await makeWriteSide(fsStoreCase(), 'pglite')
  es = side.store()
})
after(async () => {
  await side.close()
})

const ctx: HandlerContext = { tx: undefined, attempt: 1, signal: new AbortController().signal }

const ok = (p: Parsed<DomainCommand>): DomainCommand => {
  if (!p.ok) assert.fail(JSON.stringify(p.problems))
  return p.value
}

/** Appends a command as the OMS does (creates: the expected sequence from the stream). */
const submit = async (
  cmd: DomainCommand,
  expectedSeq?: number,
  commandId: string = randomUUID(),
): Promise<StoredEnvelope> => {
  const t = commandTarget(cmd)
  const expected = expectedSeq ?? (await es.currentSequence(t.aggregateType, t.aggregateId))
  const { envelopes } = await es.append({
    envelopes: [
      commandEnvelope(cmd, {
        commandId,
        expectedSeq: expected,
        actor: 'tester',
        correlationId: 'corr-42',
      }),
    ],
    expectedSeq: expected,
  })
  const stored = envelopes[0]
  assert.ok(stored !== undefined)
  return stored
}

const run = async (
  handle: ReturnType<typeof createCommandHandler>,
  command: StoredEnvelope,
): Promise<CommandResult> => (await handle(command, ctx)) as CommandResult

const streamOf = async (command: StoredEnvelope): Promise<StoredEnvelope[]> =>
  es.readStream(command.aggregate_type, command.aggregate_id)

test('create database → class → instance: one domain event each, on the command aggregate', async () => {
  const handle = createCommandHandler({ eventStore: es })
  const dbCmd = await submit(ok(parseCreateDatabase({ name: 'shop', description: 'A shop' })))
  const r1 = await run(handle, dbCmd)
  assert.equal(r1.outcome, 'completed')
  assert.deepEqual(
    r1.events.map((e) => [e.event_type, e.aggregate_type, e.aggregate_id, e.sequence_number]),
    [['DATABASE_CREATED', 'Database', 'shop', 2]],
  )
  const created = await es.getByEventId(r1.events[0]?.event_id ?? '')
  assert.equal(created?.metadata.kind, 'domain')
  assert.equal(created?.metadata.kafka_topic, 'ontology_events')
  assert.equal(created?.metadata.service, 'ontology_worker')
  assert.equal(created?.metadata.command_id, dbCmd.event_id)
  assert.equal(created?.metadata.correlation_id, 'corr-42')
  assert.equal(created?.metadata.ordering_key, 'shop')
  assert.equal(created?.actor, 'tester')
  assert.equal(created?.data.generation, 2)

  const companyCmd = await submit(
    ok(
      parseCreateClass('shop', {
        id: 'Company',
        properties: [{ name: 'name', type: 'string', required: true }],
      }),
    ),
  )
  assert.equal((await run(handle, companyCmd)).outcome, 'completed')
  const productCmd = await submit(
    ok(
      parseCreateClass('shop', {
        id: 'Product',
        label: 'Product',
        properties: [
          { name: 'sku', type: 'string', required: true },
          { name: 'qty', type: 'integer' },
          { name: 'maker', type: 'reference', target_class: 'Company' },
        ],
      }),
    ),
  )
  const r2 = await run(handle, productCmd)
  assert.equal(r2.outcome, 'completed')
  assert.equal(r2.events[0]?.aggregate_id, 'shop:Product')

  const acme = await submit(
    ok(
      parseCreateInstance('shop', 'Company', { id: 'acme', data: { name: 'ACME' } }, randomUUID()),
    ),
  )
  assert.equal((await run(handle, acme)).outcome, 'completed')
  const p1 = await submit(
    ok(
      parseCreateInstance(
        'shop',
        'Product',
        { id: 'P-1', data: { sku: 'a-1', qty: 3, maker: 'acme' } },
        randomUUID(),
      ),
    ),
  )
  const r3 = await run(handle, p1)
  assert.equal(r3.outcome, 'completed')
  const event = await es.getByEventId(r3.events[0]?.event_id ?? '')
  assert.equal(event?.event_type, 'INSTANCE_CREATED')
  assert.equal(event?.metadata.kafka_topic, 'instance_events')
  assert.equal(event?.metadata.service, 'instance_worker')
  assert.deepEqual(event?.data.data, { maker: 'acme', qty: 3, sku: 'a-1' })
  assert.deepEqual(
    (await streamOf(p1)).map((e) => [e.sequence_number, e.event_type]),
    [
      [1, 'CREATE_INSTANCE_REQUESTED'],
      [2, 'INSTANCE_CREATED'],
    ],
  )

  const upd = await submit(
    ok(parseUpdateInstance('shop', 'Product', 'P-1', { data: { qty: null } })),
    2,
  )
  const r4 = await run(handle, upd)
  assert.equal(r4.outcome, 'completed')
  const updated = await es.getByEventId(r4.events[0]?.event_id ?? '')
  assert.deepEqual(updated?.data.data, { maker: 'acme', sku: 'a-1' })
  assert.equal(updated?.sequence_number, 4)
})

test('validation failures: COMMAND_REJECTED with a readable reason and nothing else appended', async () => {
  const handle = createCommandHandler({ eventStore: es })
  await run(handle, await submit(ok(parseCreateDatabase({ name: 'val' }))))
  await run(
    handle,
    await submit(
      ok(
        parseCreateClass('val', {
          id: 'Item',
          properties: [
            { name: 'sku', type: 'string', required: true },
            { name: 'qty', type: 'integer' },
            { name: 'owner', type: 'reference', target_class: 'Item' },
          ],
        }),
      ),
    ),
  )
  const cases: [Record<string, unknown>, string, RegExp][] = [
    [{ qty: 1 }, 'validation_failed', /missing required property "sku"/],
    [{ sku: 'x', qty: 'many' }, 'validation_failed', /property "qty" must be an integer/],
    [
      { sku: 'x', owner: 'ghost' },
      'dangling_reference',
      /refers to Item "ghost", which does not exist/,
    ],
  ]
  for (const [data, code, reason] of cases) {
    const cmd = await submit(ok(parseCreateInstance('val', 'Item', { data }, randomUUID())))
    const r = await run(handle, cmd)
    assert.equal(r.outcome, 'rejected')
    assert.equal(r.code, code)
    assert.match(r.reason ?? '', reason)
    const stream = await streamOf(cmd)
    assert.deepEqual(
      stream.map((e) => e.event_type),
      [`CREATE_INSTANCE_REQUESTED`, 'COMMAND_REJECTED'],
    )
    assert.equal(stream[1]?.data.aggregate_exists, false)
    assert.equal(stream[1]?.metadata.kafka_topic, 'instance_events')
  }
  const noClass = await submit(
    ok(parseCreateInstance('val', 'Nope', { id: 'n', data: {} }, randomUUID())),
  )
  const r = await run(handle, noClass)
  assert.equal(r.code, 'class_not_found')
  assert.match(r.reason ?? '', /class "Nope" does not exist in database "val"/)
  const noDb = await submit(ok(parseCreateClass('ghost', { id: 'A' })))
  assert.equal((await run(handle, noDb)).code, 'database_not_found')
})

test('a retried handler after the append returns the same outcome and appends nothing', async () => {
  const handle = createCommandHandler({ eventStore: es })
  const cmd = await submit(ok(parseCreateDatabase({ name: 'twice' })))
  const first = await run(handle, cmd)
  const again = await run(createCommandHandler({ eventStore: es }), cmd)
  assert.deepEqual(again, first)
  assert.equal((await streamOf(cmd)).length, 2)
  // The same for a rejection: the second run does not decide again (now it would be different).
  const dup = await submit(ok(parseCreateDatabase({ name: 'twice' })), 2)
  const rejected = await run(handle, dup)
  assert.equal(rejected.code, 'already_exists')
  assert.deepEqual(await run(handle, dup), rejected)
  assert.equal((await streamOf(cmd)).length, 4)
})

test('a sequence conflict during the decision: decided again on the new state', async () => {
  const handle0 = createCommandHandler({ eventStore: es })
  await run(handle0, await submit(ok(parseCreateDatabase({ name: 'race' }))))
  const cmd = await submit(ok(parseCreateClass('race', { id: 'A' })))
  let interfered = 0
  const racing: EventStore = {
    ...es,
    append: async (input) => {
      if (interfered < 2) {
        interfered++
        // Another OMS appends a command to the aggregate between the decision and its append.
        await submit(
          ok(parseCreateClass('race', { id: 'A' })),
          cmd.sequence_number + interfered - 1,
        )
      }
      return es.append(input)
    },
  }
  const r = await run(createCommandHandler({ eventStore: racing }), cmd)
  assert.equal(r.outcome, 'completed')
  assert.equal(interfered, 2)
  assert.equal(r.events[0]?.sequence_number, 4)
  assert.deepEqual(
    (await streamOf(cmd)).map((e) => e.event_type),
    [
      'CREATE_ONTOLOGY_CLASS_REQUESTED',
      'CREATE_ONTOLOGY_CLASS_REQUESTED',
      'CREATE_ONTOLOGY_CLASS_REQUESTED',
      'ONTOLOGY_CLASS_CREATED',
    ],
  )
  // Always conflicting: a retryable error after the bounded number of decisions.
  const cmd2 = await submit(ok(parseCreateClass('race', { id: 'B' })))
  const always: EventStore = {
    ...es,
    append: async (input) => {
      const t = { aggregateType: 'OntologyClass', aggregateId: 'race:B' }
      await submit(
        ok(parseCreateClass('race', { id: 'B' })),
        await es.currentSequence(t.aggregateType, t.aggregateId),
      )
      return es.append(input)
    },
  }
  await assert.rejects(
    run(createCommandHandler({ eventStore: always, maxConflicts: 3 }), cmd2),
    (e: unknown) => isCairnError(e, 'SEQUENCE_CONFLICT') && e.retryable,
  )
})

test('a malformed command envelope is a rejection result, with nothing appended', async () => {
  const handle = createCommandHandler({ eventStore: es })
  const { envelopes } = await es.append({
    envelopes: [
      createEnvelope({
        event_type: 'FROB_REQUESTED',
        aggregate_type: 'Database',
        aggregate_id: 'frob',
        data: { command_type: 'FROB' },
        metadata: { kind: 'command' },
      }),
    ],
  })
  const stored = envelopes[0]
  assert.ok(stored)
  const r = await run(handle, stored)
  assert.equal(r.outcome, 'rejected')
  assert.equal(r.code, 'invalid_command')
  assert.match(r.reason ?? '', /unknown command type "FROB"/)
  assert.equal((await streamOf(stored)).length, 1)
  const domain = { ...stored, metadata: { kind: 'domain' as const } }
  assert.equal((await run(handle, domain)).code, 'invalid_command')
  // A command stored under another aggregate than it names.
  const wrong = await es.append({
    envelopes: [
      {
        ...commandEnvelope(ok(parseCreateDatabase({ name: 'elsewhere' })), {
          commandId: randomUUID(),
          expectedSeq: 0,
          actor: null,
        }),
        aggregate_id: 'not-elsewhere',
      },
    ],
  })
  const w = wrong.envelopes[0]
  assert.ok(w)
  assert.match((await run(handle, w)).reason ?? '', /stored in Database not-elsewhere/)
})

test('expectedSeqForCreate: 0 when new or live (→ conflict), the current sequence once gone, generations included', async () => {
  const handle = createCommandHandler({ eventStore: es })
  const createDb = ok(parseCreateDatabase({ name: 'gen' }))
  assert.equal(await expectedSeqForCreate(es, createDb), 0)
  const c1 = await submit(createDb)
  assert.equal(await expectedSeqForCreate(es, createDb), 0) // pending command: conflict
  await run(handle, c1)
  assert.equal(await expectedSeqForCreate(es, createDb), 0) // live: conflict
  const createCls = ok(parseCreateClass('gen', { id: 'K' }))
  await run(handle, await submit(createCls))
  assert.equal(await expectedSeqForCreate(es, createCls), 0)
  await run(handle, await submit(ok(parseDeleteDatabase('gen')), 2))
  assert.equal(await expectedSeqForCreate(es, createDb), 4)
  await run(handle, await submit(createDb, 4))
  // The class's own stream still ends with ONTOLOGY_CLASS_CREATED, but its database generation is gone.
  assert.equal(await expectedSeqForCreate(es, createCls), 2)
  const again = await submit(createCls, 2)
  const r = await run(handle, again)
  assert.equal(r.outcome, 'completed')
  assert.equal(r.events[0]?.sequence_number, 4)
})
