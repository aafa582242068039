import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, before, test } from 'node:test'
import { createEnvelope } from '../../src/core/envelope.ts'
import { createStreamCache } from '../../src/domain/command-handler.ts'
import type { EventStore } from '../../src/event-store/event-store.ts'
import { fsStoreCase } from '../support/adapters.ts'
import { makeWriteSide } from '../support/write-side.ts'
import type { WriteSide } from '../support/write-side.ts'

let side: WriteSide
let es: EventStore
/** Streams read from the store (the stream index, then the segments that hold them). */
let reads = 0

before(async () => {
  side = await makeWriteSide(fsStoreCase(), 'pglite')
  const inner = side.store()
  es = { ...inner, readStream: (...a) => (reads++, inner.readStream(...a)) }
})
after(async () => {
  await side.close()
})

const thing = (id: string, i: number) =>
  createEnvelope({
    event_type: 'THING_HAPPENED',
    aggregate_type: 'Thing',
    aggregate_id: id,
    data: { i },
    metadata: { kind: 'domain' },
  })

test('the stream cache returns what the store holds, reading only what is new, and nothing when nothing is', async () => {
  const id = `t-${randomUUID()}`
  const read = createStreamCache(es)
  assert.deepEqual(await read('Thing', id), [])
  for (let i = 0; i < 3; i++) await es.append({ envelopes: [thing(id, i)] })
  const first = await read('Thing', id)
  assert.deepEqual(first, await es.readStream('Thing', id))
  assert.deepEqual(
    first.map((e) => e.sequence_number),
    [1, 2, 3],
  )
  const before = reads
  assert.deepEqual(await read('Thing', id), first)
  assert.equal(reads, before, 'an unchanged stream is not read again')
  await es.append({ envelopes: [thing(id, 3), thing(id, 4)] })
  const second = await read('Thing', id)
  assert.deepEqual(second, await es.readStream('Thing', id))
  assert.deepEqual(
    second.map((e) => e.data['i']),
    [0, 1, 2, 3, 4],
  )
})

test('the stream cache forgets the least recently used streams beyond its bound', async () => {
  const read = createStreamCache(es, 2)
  const ids = [0, 1, 2].map(() => `t-${randomUUID()}`)
  for (const id of ids) await es.append({ envelopes: [thing(id, 0)] })
  for (const id of ids) assert.equal((await read('Thing', id)).length, 1)
  const before = reads
  await read('Thing', ids[2] as string)
  assert.equal(reads, before, 'a remembered stream')
  await read('Thing', ids[0] as string)
  assert.equal(reads, before + 1, 'a forgotten stream is read again')
})

test('an event the caller holds extends the cached stream: a new aggregate is not read back, a gap is not remembered', async () => {
  const read = createStreamCache(es)
  const id = `t-${randomUUID()}`
  const [first] = (await es.append({ envelopes: [thing(id, 0)] })).envelopes
  assert.ok(first)
  read.remember(first)
  const before = reads
  assert.deepEqual(await read('Thing', id, 1), [first], 'known current: no query, no read')
  assert.equal(reads, before)
  // Not the next event of the cached prefix (seq 3 after 1): ignored, the stream is read.
  await es.append({ envelopes: [thing(id, 1)] })
  const [third] = (await es.append({ envelopes: [thing(id, 2)] })).envelopes
  assert.ok(third)
  read.remember(third)
  const stream = await read('Thing', id)
  assert.equal(reads, before + 1, 'read from the store once')
  assert.deepEqual(stream, await es.readStream('Thing', id))
})
