import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { test } from 'node:test'
import { createFsObjectStore } from '../../src/adapters/object-store/fs/fs-object-store.ts'
import { segmentKey, segmentKeyFloor } from '../../src/event-store/keys.ts'
import { lagSeconds, unpublishedSegments } from '../../src/publisher/lag.ts'

test('lag: the age of the first segment after the checkpoint; 0 when caught up, however idle', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'cairn-lag-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  const store = await createFsObjectStore({ root: dir })
  const t0 = Date.UTC(2026, 11, 7, 10, 0, 0) * 1000
  const first = segmentKey(t0, 'w1', 1)
  const second = segmentKey(t0 + 5_000_000, 'w1', 2)
  const body = new TextEncoder().encode('{}\n')
  await store.putIfAbsent(first, body)
  await store.putIfAbsent(second, body)

  const oldestUnpublishedUs = async (checkpoint: string | null) =>
    (await unpublishedSegments(store, checkpoint)).oldestUs
  // Nothing published yet: the oldest segment's age; two segments to publish.
  assert.deepEqual(await unpublishedSegments(store, null), {
    oldestUs: t0,
    count: 2,
    capped: false,
  })
  assert.equal(lagSeconds(await oldestUnpublishedUs(null), t0 + 42_000_000), 42)
  // The checkpoint past the first: the second's age.
  assert.equal(await oldestUnpublishedUs(first), t0 + 5_000_000)
  // Caught up (the checkpoint at the last key, or a settled floor past it): 0, an hour later too.
  assert.equal(await oldestUnpublishedUs(second), null)
  assert.equal(lagSeconds(await oldestUnpublishedUs(second), t0 + 3_600_000_000), 0)
  const floor = segmentKeyFloor(t0 + 60_000_000)
  assert.equal(lagSeconds(await oldestUnpublishedUs(floor), t0 + 3_600_000_000), 0)
  // A clock behind the key (never negative).
  assert.equal(lagSeconds(t0, t0 - 1_000_000), 0)
})
