import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { childEnv } from '../support/child.ts'
import { createKafkaBus } from '../../src/adapters/bus/kafka-bus.ts'
import { createEnvelope } from '../../src/core/envelope.ts'
import type { S3ObjectStore } from '../../src/adapters/object-store/s3/s3-object-store.ts'
import type { PublisherMetrics } from '../../src/publisher/publisher.ts'
import { s3StoreCases } from '../support/adapters.ts'
import { collectDistinct } from '../support/collect.ts'
import { kafkaBrokers, uniqueName } from '../support/services.ts'
import { makeWriteSide } from '../support/write-side.ts'

const child = fileURLToPath(new URL('./fixtures/publisher-process.ts', import.meta.url))

/** Starts the publisher process; resolves when `until` holds for a metrics line. */
const startUntil = (
  bucket: string,
  until: (m: PublisherMetrics) => boolean,
): Promise<{ proc: ChildProcess; last: PublisherMetrics }> =>
  new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [child], {
      env: childEnv({ TEST_BUCKET: bucket }),
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    const lines = createInterface({ input: proc.stdout })
    const timer = setTimeout(() => {
      proc.kill('SIGKILL')
      reject(new Error('publisher process did not reach the expected state'))
    }, 60_000)
    lines.on('line', (line) => {
      const m = JSON.parse(line) as PublisherMetrics
      if (until(m)) {
        clearTimeout(timer)
        lines.close()
        resolve({ proc, last: m })
      }
    })
    proc.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`publisher process exited with ${String(code)}`))
    })
  })

const killHard = (proc: ChildProcess): Promise<void> =>
  new Promise((resolve) => {
    proc.removeAllListeners('exit')
    proc.once('exit', () => resolve())
    proc.kill('SIGKILL')
  })

test('publisher killed with SIGKILL mid-batch, restarted: every event reaches Kafka at least once, few twice', async () => {
  const minio = s3StoreCases()[0]
  assert.ok(minio)
  const ws = await makeWriteSide(minio, 'pg')
  const bus = createKafkaBus({ brokers: kafkaBrokers() })
  try {
    const topic = uniqueName('crash')
    const store = ws.store()
    const total = 600
    const envs = Array.from({ length: total }, (_, i) =>
      createEnvelope({
        event_type: 'THING_HAPPENED',
        aggregate_type: 'Thing',
        aggregate_id: `crash-${i % 40}`,
        data: { i },
        metadata: { kind: 'domain', kafka_topic: topic },
      }),
    )
    for (let i = 0; i < total; i += 50) {
      await Promise.all(envs.slice(i, i + 50).map((e) => store.append({ envelopes: [e] })))
    }
    const bucket = (ws.objectStore as S3ObjectStore).bucket

    const first = await startUntil(bucket, (m) => m.published >= 100 && m.published < total)
    await killHard(first.proc)
    const second = await startUntil(bucket, (m) => m.role === 'active')
    const got = await collectDistinct(bus, topic, total, 60_000)
    await killHard(second.proc)

    const ids = got.map((m) => m.headers.event_id)
    const distinct = new Set(ids)
    assert.equal(distinct.size, total, 'every event reached Kafka')
    for (const e of envs) assert.ok(distinct.has(e.event_id))
    const duplicates = ids.length - distinct.size
    // Republished: only what the dead process sent after its last checkpoint save (the snapshot
    // in the checkpoint absorbs the rest), far less than everything.
    assert.ok(duplicates < total / 2, `${duplicates} duplicates of ${total}`)
    // Per aggregate, the last delivery of each sequence comes in order.
    for (let a = 0; a < 40; a++) {
      const seqs = got
        .filter((m) => m.key === `crash-${a}`)
        .map((m) => Number(m.headers.sequence_number))
      const firstSeen = seqs.filter((s, i) => seqs.indexOf(s) === i)
      assert.deepEqual(
        firstSeen,
        [...firstSeen].sort((x, y) => x - y),
      )
    }
  } finally {
    await bus.close()
    await ws.close()
  }
})
