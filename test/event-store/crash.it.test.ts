import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { childEnv } from '../support/child.ts'
import type { S3ObjectStore } from '../../src/adapters/object-store/s3/s3-object-store.ts'
import { createEnvelope } from '../../src/core/envelope.ts'
import { segmentKey } from '../../src/event-store/keys.ts'
import { parseSegment } from '../../src/event-store/segment.ts'
import { createSequenceAllocator } from '../../src/sequencing/allocator.ts'
import { s3StoreCases } from '../support/adapters.ts'
import { makeWriteSide } from '../support/write-side.ts'

const child = fileURLToPath(new URL('./fixtures/stalling-writer.ts', import.meta.url))

const event = (aggregateId: string, eventId: string = randomUUID()) =>
  createEnvelope({
    event_id: eventId,
    event_type: 'THING_HAPPENED',
    aggregate_type: 'Thing',
    aggregate_id: aggregateId,
    metadata: { kind: 'domain' },
  })

test('a writer killed between reserving a sequence and writing it: appends and readers go on, the hole is closed', async () => {
  const minio = s3StoreCases()[0]
  assert.ok(minio)
  const ws = await makeWriteSide(minio, 'pg')
  try {
    const store = ws.store()
    const allocator = createSequenceAllocator({ sql: ws.sql, schema: ws.schema })
    const agg = `killed-${randomUUID()}`
    const lost = randomUUID()
    await store.append({ envelopes: [event(agg)] })

    const proc = spawn(process.execPath, [child], {
      env: childEnv({
        TEST_BUCKET: (ws.objectStore as S3ObjectStore).bucket,
        TEST_SCHEMA: ws.schema,
        TEST_AGGREGATE: agg,
        TEST_EVENT_ID: lost,
      }),
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    await new Promise<void>((resolve, reject) => {
      proc.stdout.on('data', (d: Buffer) => {
        if (d.toString().includes('reserved')) resolve()
      })
      proc.once('exit', (code) => reject(new Error(`writer exited early with ${String(code)}`)))
    })
    proc.removeAllListeners('exit')
    const exited = new Promise((r) => proc.once('exit', r))
    proc.kill('SIGKILL')
    await exited

    // Sequence 2 was reserved by the dead writer, in a segment never written.
    const hole = await allocator.lookup(lost)
    assert.ok(hole !== null)
    assert.equal(hole.seq, 2)
    assert.equal(hole.state, 'reserved')
    const key = segmentKey(hole.segment.atUs, hole.segment.writer, hole.segment.n)
    assert.equal(await ws.objectStore.get(key), null)

    const next = await store.append({ envelopes: [event(agg)], expectedSeq: 2 })
    assert.equal(next.envelopes[0]?.sequence_number, 3)
    const started = Date.now()
    assert.deepEqual(
      (await store.readStream('Thing', agg)).map((e) => e.sequence_number),
      [1, 3],
    )
    assert.equal(await store.getByEventId(lost), null)
    assert.ok(Date.now() - started < 5_000, 'readers do not wait on the hole')

    const repaired = await store.repairStaleReservations(0)
    assert.ok(repaired.gaps >= 1)
    assert.equal((await allocator.lookup(lost))?.state, 'gap')
    const slot = await ws.objectStore.get(key)
    assert.ok(slot !== null, 'the hole is recorded')
    const closed = parseSegment(slot.body)
    assert.ok(closed.kind === 'gap', 'the hole is a gap marker')
    assert.equal(closed.marker.segment, key)
    // Closed create-only: the dead writer, had it come back, could not write its segment there.
    assert.equal(await ws.objectStore.putIfAbsent(key, new Uint8Array([0x7b, 0x7d])), 'exists')

    const after = await store.append({ envelopes: [event(agg)], expectedSeq: 3 })
    assert.equal(after.envelopes[0]?.sequence_number, 4)
    assert.deepEqual(
      (await store.readStream('Thing', agg)).map((e) => e.sequence_number),
      [1, 3, 4],
    )
    // The lost event's client retries it: appended anew, not a duplicate of the hole.
    const retried = await store.append({ envelopes: [event(agg, lost)] })
    assert.equal(retried.outcome, 'appended')
    assert.equal(retried.envelopes[0]?.sequence_number, 5)
    assert.equal((await store.getByEventId(lost))?.sequence_number, 5)
  } finally {
    await ws.close()
  }
})
