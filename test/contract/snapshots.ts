import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { createSnapshotStore } from '../../src/application/snapshots.ts'
import type { SnapshotStore } from '../../src/application/snapshots.ts'
import { migrate } from '../../src/adapters/sql/migrations.ts'
import type { Sql } from '../../src/core/ports/sql.ts'

export type SnapshotCase = {
  readonly name: string
  /** A database and a schema name of its own; `drop` removes what the case made. */
  create(): Promise<{ sql: Sql; schema: string; drop(): Promise<void> }>
}

/**
 * The snapshot store's promises (application/snapshots.ts) on one SQL adapter: a state comes back
 * as it was saved (JSON types kept), a snapshot of another `evolve` version is not served,
 * saving never goes backwards, and concurrent saves leave the newest.
 */
export const snapshotContract = (cases: readonly SnapshotCase[]): void => {
  for (const c of cases) {
    describe(`snapshot store: ${c.name}`, () => {
      let world: Awaited<ReturnType<SnapshotCase['create']>>
      let store: SnapshotStore
      before(async () => {
        world = await c.create()
        await migrate(world.sql, world.schema)
        store = createSnapshotStore(world.sql, world.schema)
      })
      after(async () => world.drop())

      test('a saved state comes back with its seq and its JSON types; none before a save', async () => {
        assert.equal(await store.load('Cart', 'a', 1), null)
        const state = {
          items: [{ sku: 'x', qty: 2, price: 1.5 }],
          open: true,
          note: null,
          text: 'ünïcode "quoted" <tag>',
        }
        await store.save('Cart', 'a', 1, { seq: 10, state })
        assert.deepEqual(await store.load('Cart', 'a', 1), { seq: 10, state })
        await store.save('Cart', 'b', 1, { seq: 3, state: 'plain text' })
        assert.deepEqual(await store.load('Cart', 'b', 1), { seq: 3, state: 'plain text' })
      })

      test('a snapshot of another evolve version is not served; a save of the new one replaces it', async () => {
        await store.save('Cart', 'v', 1, { seq: 20, state: { v: 1 } })
        assert.equal(await store.load('Cart', 'v', 2), null)
        // A new version replaces the old even at a lower seq (the old one is useless to it).
        await store.save('Cart', 'v', 2, { seq: 5, state: { v: 2 } })
        assert.deepEqual(await store.load('Cart', 'v', 2), { seq: 5, state: { v: 2 } })
        assert.equal(await store.load('Cart', 'v', 1), null)
      })

      test('saving never goes backwards; concurrent saves leave the newest', async () => {
        await store.save('Cart', 'n', 1, { seq: 50, state: { at: 50 } })
        await store.save('Cart', 'n', 1, { seq: 40, state: { at: 40 } })
        assert.deepEqual(await store.load('Cart', 'n', 1), { seq: 50, state: { at: 50 } })
        const seqs = Array.from({ length: 20 }, (_, i) => 60 + ((i * 7) % 20))
        await Promise.all(
          seqs.map((seq) => store.save('Cart', 'n', 1, { seq, state: { at: seq } })),
        )
        assert.deepEqual(await store.load('Cart', 'n', 1), { seq: 79, state: { at: 79 } })
      })

      test('clear removes one aggregate type, or all', async () => {
        await store.save('Other', 'o', 1, { seq: 1, state: {} })
        const cartsBefore = (await store.clear('Cart')) > 0
        assert.ok(cartsBefore)
        assert.equal(await store.load('Cart', 'a', 1), null)
        assert.deepEqual(await store.load('Other', 'o', 1), { seq: 1, state: {} })
        assert.equal(await store.clear(), 1)
        assert.equal(await store.load('Other', 'o', 1), null)
      })
    })
  }
}
