import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import Type from 'typebox'
import { createCommandProcessor } from '../../src/application/command-processor.ts'
import { COMMAND_REJECTED, commandEnvelope } from '../../src/application/decider.ts'
import { defineAggregate, defineDomain, defineEvent, reject } from '../../src/application/define.ts'
import { given } from '../../src/application/testing.ts'
import { domainEventId } from '../../src/core/envelope.ts'
import type { StoredEnvelope } from '../../src/core/envelope.ts'
import { isCairnError } from '../../src/core/errors.ts'
import type { EventStore } from '../../src/event-store/event-store.ts'
import { fsStoreCase } from '../support/adapters.ts'
import { makeWriteSide } from '../support/write-side.ts'
import type { WriteSide } from '../support/write-side.ts'
import { storeCommand } from './helpers.ts'

// A library: a book may be lent only to a member who exists (another aggregate, read by `load`).
const Joined = defineEvent('Joined', Type.Object({ name: Type.String() }))
const Member = defineAggregate({
  type: 'Member',
  events: [Joined],
  initialState: () => ({ joined: false }),
  evolve: () => ({ joined: true }),
})
const Lent = defineEvent('Lent', Type.Object({ member: Type.String() }))
const Noted = defineEvent('Noted', Type.Object({}))
const Book = defineAggregate({
  type: 'Book',
  events: [Lent, Noted],
  initialState: () => ({ lentTo: null as string | null }),
  evolve: (s, e) => (e.type === 'Lent' ? { lentTo: e.data.member } : s),
})
const Join = Member.command({
  type: 'JOIN',
  schema: Type.Object({ member: Type.String(), name: Type.String() }),
  aggregateId: (c) => c.member,
  decide: (c) => [{ type: 'Joined', data: { name: c.name } }],
})
const Lend = Book.command({
  type: 'LEND',
  schema: Type.Object({ book: Type.String(), member: Type.String() }),
  aggregateId: (c) => c.book,
  emits: [Lent],
  load: async (c, read) => ({
    member: await read(Member, c.member),
    self: await read(Book, c.book),
  }),
  decide: (c, state, ctx) =>
    !ctx.loaded.member.joined
      ? reject('NO_MEMBER', `no member ${c.member}`, { member: c.member })
      : state.lentTo !== null || ctx.loaded.self.lentTo !== null
        ? reject('LENT', 'already lent')
        : [{ type: 'Lent', data: { member: c.member } }],
})
// Stored in a format of its own: the book id beside the payload, not in it.
const Note = Book.command({
  type: 'NOTE',
  schema: Type.Object({ book: Type.String(), twice: Type.Boolean() }),
  aggregateId: (c) => c.book,
  storage: {
    data: (c) => ({ book_id: c.book, payload: { twice: c.twice } }),
    read: (e) =>
      typeof e.data['book_id'] === 'string'
        ? {
            ok: true,
            command: {
              book: e.data['book_id'],
              twice: (e.data['payload'] as { twice?: unknown }).twice === true,
            },
          }
        : { ok: false, reason: 'no book_id' },
  },
  decide: (c) =>
    c.twice
      ? [
          { type: 'Noted', data: {} },
          { type: 'Noted', data: {} },
        ]
      : [],
})

const library = (eventFormat?: 'typed') =>
  defineDomain({
    name: 'library',
    aggregates: [Member, Book],
    commands: [Join, Lend, Note],
    invalidCommandCode: 'invalid_command',
    ...(eventFormat === undefined ? {} : { eventFormat }),
  })

describe('application API: load, rejection details, command storage, typed events', () => {
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

  test('load reads another aggregate through the processor; a rejection stores its details', async () => {
    const processor = createCommandProcessor({ domain: library(), eventStore: es })
    const early = await store(
      Lend,
      { book: 'b1', member: 'ada' },
      'b0000000-0000-4000-8000-000000000001',
    )
    const refused = await processor.process(early)
    assert.equal(refused.code, 'NO_MEMBER')
    const stored = await es.getByEventId(refused.events[0]?.event_id ?? '')
    assert.deepEqual(stored?.data, {
      command_id: 'b0000000-0000-4000-8000-000000000001',
      command_type: 'LEND',
      code: 'NO_MEMBER',
      reason: 'no member ada',
      member: 'ada',
    })
    await processor.process(
      await store(Join, { member: 'ada', name: 'Ada' }, 'b0000000-0000-4000-8000-000000000002'),
    )
    const lend = await store(
      Lend,
      { book: 'b1', member: 'ada' },
      'b0000000-0000-4000-8000-000000000003',
    )
    assert.equal((await processor.process(lend)).outcome, 'completed')
    assert.deepEqual(await processor.load(Book, 'b1'), { state: { lentTo: 'ada' }, sequence: 4 })
  })

  test('given/when passes what load would read', () => {
    given([])
      .when(Lend, { book: 'b', member: 'm' }, { loaded: { member: { joined: false } } })
      .thenRejected('NO_MEMBER')
    given([])
      .when(
        Lend,
        { book: 'b', member: 'm' },
        { loaded: { member: { joined: true }, self: { lentTo: null } } },
      )
      .then([{ type: 'Lent', data: { member: 'm' } }])
  })

  test('emits holds decide to its events; it names only the aggregate’s events', () => {
    assert.throws(
      () =>
        Book.command({
          type: 'BAD',
          schema: Type.Object({ book: Type.String() }),
          aggregateId: (c) => c.book,
          emits: [Joined],
          decide: () => [],
        }),
      (e: unknown) => isCairnError(e, 'INVALID_CONFIG'),
    )
    const Sneaky = Book.command({
      type: 'SNEAKY',
      schema: Type.Object({ book: Type.String() }),
      aggregateId: (c) => c.book,
      emits: [Noted],
      decide: () => [{ type: 'Lent', data: { member: 'x' } }],
    })
    assert.throws(
      () => given([]).when(Sneaky, { book: 'b' }),
      (e: unknown) => isCairnError(e, 'INVALID_ENVELOPE') && /the events it emits/.test(e.message),
    )
  })

  test('a command stored in a format of its own is written and read back through its storage', async () => {
    const processor = createCommandProcessor({ domain: library(), eventStore: es })
    const note = await store(
      Note,
      { book: 'b2', twice: true },
      'b0000000-0000-4000-8000-000000000004',
    )
    assert.deepEqual(note.data, {
      command_id: 'b0000000-0000-4000-8000-000000000004',
      command_type: 'NOTE',
      expected_seq: null,
      book_id: 'b2',
      payload: { twice: true },
    })
    const result = await processor.process(note)
    assert.deepEqual(
      result.events.map((e) => e.event_type),
      ['Noted', 'Noted'],
    )
    const unreadable = await es.append({
      envelopes: [
        {
          ...commandEnvelope(
            Note,
            { book: 'b3', twice: false },
            { commandId: 'b0000000-0000-4000-8000-000000000005' },
          ),
          data: { command_type: 'NOTE' },
        },
      ],
    })
    const r = await processor.process(unreadable.envelopes[0] as StoredEnvelope)
    assert.deepEqual(r, {
      outcome: 'rejected',
      events: [],
      code: 'invalid_command',
      reason: 'no book_id',
    })
  })

  test('typed events: ids by type, no command_type in metadata, the service given; found again after a crash', async () => {
    const domain = library('typed')
    const processor = createCommandProcessor({
      domain,
      eventStore: es,
      service: (a) => `${a.type.toLowerCase()}_worker`,
    })
    const join = await store(
      Join,
      { member: 'bo', name: 'Bo' },
      'b0000000-0000-4000-8000-000000000006',
    )
    const first = await processor.process(join)
    const id = domainEventId('b0000000-0000-4000-8000-000000000006', 'Joined', 'bo')
    assert.equal(first.events[0]?.event_id, id)
    const stored = await es.getByEventId(id)
    assert.equal(stored?.metadata.command_type, undefined)
    assert.equal(stored?.metadata.service, 'member_worker')
    const again = await createCommandProcessor({ domain, eventStore: es }).process(join)
    assert.deepEqual(again, first)
    const rejected = await processor.process(
      await store(Lend, { book: 'b4', member: 'nobody' }, 'b0000000-0000-4000-8000-000000000007'),
    )
    assert.equal(
      rejected.events[0]?.event_id,
      domainEventId('b0000000-0000-4000-8000-000000000007', COMMAND_REJECTED, 'b4'),
    )
    // Two events of one type cannot both have the type's id.
    await assert.rejects(
      processor.process(
        await store(Note, { book: 'b5', twice: true }, 'b0000000-0000-4000-8000-000000000008'),
      ),
      (e: unknown) => isCairnError(e, 'INVALID_ENVELOPE') && /at most once/.test(e.message),
    )
  })
})
