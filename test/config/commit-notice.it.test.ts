import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { test } from 'node:test'
import { createEnvelope } from '../../src/core/envelope.ts'
import { silentLogger } from '../../src/core/ports/logger.ts'
import { commitChannel, openWriteSide } from '../../src/config/compose.ts'
import { loadConfig } from '../../src/config/env.ts'
import type { CommitNotice } from '../../src/event-store/event-store.ts'
import { createNoticeAssembler, decodeCommitNotice } from '../../src/event-store/segment.ts'
import type { AssembledNotice } from '../../src/event-store/segment.ts'
import { createPgSql } from '../../src/adapters/sql/pg.ts'
import { databaseUrl, s3Targets, uniqueName } from '../support/services.ts'

test('a writer on PostgreSQL announces each commit by NOTIFY, with its entries, in parts when they do not fit in one', async () => {
  const minio = s3Targets()[0] as NonNullable<ReturnType<typeof s3Targets>[0]>
  const config = loadConfig({
    CAIRN_MODE: 'distributed',
    CAIRN_S3_ENDPOINT: minio.endpoint,
    CAIRN_S3_ACCESS_KEY_ID: minio.accessKeyId,
    CAIRN_S3_SECRET_ACCESS_KEY: minio.secretAccessKey,
    CAIRN_DATABASE_URL: databaseUrl(),
    CAIRN_KAFKA_BROKERS: '127.0.0.1:1',
    EVENT_STORE_BUCKET: uniqueName('cairn-notice'),
    EVENT_STORE_SEQUENCE_SCHEMA: uniqueName('cairn_notice').replace(/-/g, '_'),
  })
  await using ws = await openWriteSide(config, silentLogger, { probe: false })
  const listener = createPgSql({ connectionString: databaseUrl() })
  try {
    const payloads: string[] = []
    const stop = await listener.listen?.(commitChannel(config), (p) => payloads.push(p))
    assert.ok(stop)
    const local: CommitNotice[] = []
    ws.eventStore.onCommit((n) => local.push(n))
    const envelope = (aggregateId: string, payload: string) =>
      createEnvelope({
        event_type: 'THING_HAPPENED',
        aggregate_type: 'Thing',
        aggregate_id: aggregateId,
        data: { payload },
        metadata: { kind: 'domain' },
      })
    const group = (n: number) => {
      const id = `g-${randomUUID()}`
      return Array.from({ length: n }, () => envelope(id, 'x'.repeat(1_024)))
    }
    // One small event, a group too large for one payload, and one too large for 16.
    await ws.eventStore.append({ envelopes: [envelope(`a-${randomUUID()}`, 'small')] })
    await ws.eventStore.append({ envelopes: group(30) })
    await ws.eventStore.append({ envelopes: group(200) })
    assert.equal(local.length, 3)
    const assembler = createNoticeAssembler()
    const notices: AssembledNotice[] = []
    const deadline = Date.now() + 5_000
    while (notices.length < 3 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20))
      for (const p of payloads.splice(0)) notices.push(...assembler.take(decodeCommitNotice(p)))
    }
    await stop()
    assert.equal(notices.length, 3)
    const [small, large, huge] = notices
    assert.equal(small?.segmentKey, local[0]?.segmentKey)
    assert.deepEqual(small?.entries, local[0]?.entries, 'the small commit carries its entries')
    assert.equal(large?.segmentKey, local[1]?.segmentKey)
    assert.equal(large?.entries?.length, 30)
    assert.deepEqual(large?.entries, local[1]?.entries, 'the large one, put back together')
    assert.equal(huge?.segmentKey, local[2]?.segmentKey)
    assert.equal(huge?.entries, undefined, 'the huge one is announced by key alone')
  } finally {
    await listener.close()
  }
})
