import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, test } from 'node:test'
import { createFsObjectStore } from '../../src/adapters/object-store/fs/fs-object-store.ts'
import { silentLogger } from '../../src/core/ports/logger.ts'
import type { ObjectStore } from '../../src/core/ports/object-store.ts'
import { createBucketGuard } from '../../src/event-store/reconcile.ts'
import type { RegistryMeta, SequenceAllocator } from '../../src/sequencing/allocator.ts'

/** The guard's view of the registry: one identity, and a count of the checks it ran. */
const registry = () => {
  const meta: RegistryMeta = {
    instance: 'registry-1',
    verifiedThroughUs: 0,
    reconciling: false,
    startedUs: 1_000,
  }
  const seen = { checks: 0 }
  const allocator = {
    meta: async () => {
      seen.checks++
      return meta
    },
    now: async () => Date.now() * 1000,
    advanceVerified: async () => {},
    segmentsKeyedBetween: async () => [],
  } as unknown as SequenceAllocator
  return { allocator, seen, reserved: (segmentId: number) => ({ ...meta, segmentId }) }
}

describe('bucket guard: when a reservation makes it check the bucket', () => {
  let dir: string
  let store: ObjectStore
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'cairn-guard-'))
    store = await createFsObjectStore({ root: dir })
  })
  after(async () => rm(dir, { recursive: true, force: true }))

  test('reservations in flight together may come back in any order: no check', async () => {
    const r = registry()
    const guard = createBucketGuard({
      store,
      allocator: r.allocator,
      log: silentLogger,
      boundMs: 0,
    })
    assert.equal(await guard.beforeReserve(), 0)
    assert.equal(r.seen.checks, 1, 'the first reservation checks')
    await guard.afterReserve(r.reserved(1), 0)
    // Three groups reserve at once; their answers arrive 4, 2, 3.
    const floors = [
      await guard.beforeReserve(),
      await guard.beforeReserve(),
      await guard.beforeReserve(),
    ]
    assert.deepEqual(floors, [1, 1, 1])
    await guard.afterReserve(r.reserved(4), 1)
    await guard.afterReserve(r.reserved(2), 1)
    await guard.afterReserve(r.reserved(3), 1)
    assert.equal(r.seen.checks, 1, 'no check for ids above what the writer held when it asked')
    assert.equal(await guard.beforeReserve(), 4)
  })

  test('an id not above what the writer held when it asked: the registry went back, it checks', async () => {
    const r = registry()
    const guard = createBucketGuard({
      store,
      allocator: r.allocator,
      log: silentLogger,
      boundMs: 0,
    })
    await guard.afterReserve(r.reserved(10), await guard.beforeReserve())
    assert.equal(r.seen.checks, 1)
    const floor = await guard.beforeReserve()
    assert.equal(floor, 10)
    await guard.afterReserve(r.reserved(7), floor)
    assert.equal(r.seen.checks, 2, 'a logical restore is checked against the bucket')
    // Ids go on from where the registry is now.
    await guard.afterReserve(r.reserved(8), await guard.beforeReserve())
    assert.equal(r.seen.checks, 2)
  })
})
