import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { childEnv } from '../support/child.ts'
import type { S3ObjectStore } from '../../src/adapters/object-store/s3/s3-object-store.ts'
import { createEnvelope } from '../../src/core/envelope.ts'
import { eventKey } from '../../src/event-store/keys.ts'
import { isGapMarker } from '../../src/event-store/gap.ts'
import { s3StoreCases } from '../support/adapters.ts'
import { makeWriteSide } from '../support/write-side.ts'

const child = fileURLToPath(new URL('./fixtures/stalling-writer.ts', import.meta.url))

const event = (aggregateId: string) =>
  createEnvelope({
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
    const agg = `killed-${randomUUID()}`
    await store.append({ envelopes: [event(agg)] })

    const proc = spawn(process.execPath, [child], {
      env: childEnv({
        TEST_BUCKET: (ws.objectStore as S3ObjectStore).bucket,
        TEST_SCHEMA: ws.schema,
        TEST_AGGREGATE: agg,
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

    // Sequence 2 was reserved by the dead writer and never written.
    const next = await store.append({ envelopes: [event(agg)], expectedSeq: 2 })
    assert.equal(next.envelopes[0]?.sequence_number, 3)
    const started = Date.now()
    assert.deepEqual(
      (await store.readStream('Thing', agg)).map((e) => e.sequence_number),
      [1, 3],
    )
    assert.ok(Date.now() - started < 5_000, 'readers do not wait on the hole')

    const repaired = await store.repairStaleReservations(0)
    assert.ok(repaired.gaps >= 1)
    const slot = await ws.objectStore.get(eventKey('Thing', agg, 2))
    assert.ok(
      slot !== null && isGapMarker(JSON.parse(new TextDecoder().decode(slot.body))),
      'the hole is recorded',
    )
    const after = await store.append({ envelopes: [event(agg)], expectedSeq: 3 })
    assert.equal(after.envelopes[0]?.sequence_number, 4)
    assert.deepEqual(
      (await store.readStream('Thing', agg)).map((e) => e.sequence_number),
      [1, 3, 4],
    )
  } finally {
    await ws.close()
  }
})
