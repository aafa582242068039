import assert from 'node:assert/strict'
import { test } from 'node:test'
import { listAll } from '../../src/core/ports/object-store.ts'
import type { ObjectStore } from '../../src/core/ports/object-store.ts'
import { contractSuite } from '../support/contract.ts'
import type { AdapterCase } from '../support/contract.ts'

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s)
const text = (b: Uint8Array): string => new TextDecoder().decode(b)

/** The object-store port's contract (see its doc comment), for every adapter. */
export const objectStoreContract = (cases: readonly AdapterCase<ObjectStore>[]): void =>
  contractSuite<ObjectStore>('object store', cases, (store) => {
    test('put then get returns the same bytes; a missing key reads as null', async () => {
      assert.equal(await store().putIfAbsent('rt/a.json', bytes('{"a":1}')), 'created')
      const got = await store().get('rt/a.json')
      assert.ok(got)
      assert.equal(text(got.body), '{"a":1}')
      assert.equal(await store().get('rt/missing.json'), null)
    })

    test('a create-only put is refused the second time and keeps the first body', async () => {
      assert.equal(await store().putIfAbsent('once/k.json', bytes('first')), 'created')
      assert.equal(await store().putIfAbsent('once/k.json', bytes('second')), 'exists')
      const got = await store().get('once/k.json')
      assert.equal(got && text(got.body), 'first')
    })

    test('16 concurrent create-only puts of one key: exactly one winner, its body stored', async () => {
      const outcomes = await Promise.all(
        Array.from({ length: 16 }, (_, i) =>
          store().putIfAbsent('race/k.json', bytes(`writer-${i}`)),
        ),
      )
      const winners = outcomes.flatMap((o, i) => (o === 'created' ? [i] : []))
      assert.equal(winners.length, 1, `winners: ${winners.join(',')}`)
      const got = await store().get('race/k.json')
      assert.equal(got && text(got.body), `writer-${winners[0]}`)
    })

    // S3 servers agree on byte order only where sibling names never extend one another (SeaweedFS
    // orders by path segment); the bucket layout keeps to fixed-width names, and so does this test.
    test('list returns keys under a prefix in order, after startAfter, across folders, page by page', async () => {
      const keys = [
        'ls/2026/02/01/0000000000003.json',
        'ls/2026/01/31/0000000000002.json',
        'ls/2026/01/30/0000000000001.json',
        'ls/2026/01/31/0000000000001.json',
        'ls/2027/01/01/0000000000001.json',
        'lsx/2026/01/01/0000000000001.json',
      ]
      for (const k of keys) await store().putIfAbsent(k, bytes(k))
      const all = []
      for await (const k of listAll(store(), 'ls/')) all.push(k)
      assert.deepEqual(all, [
        'ls/2026/01/30/0000000000001.json',
        'ls/2026/01/31/0000000000001.json',
        'ls/2026/01/31/0000000000002.json',
        'ls/2026/02/01/0000000000003.json',
        'ls/2027/01/01/0000000000001.json',
      ])

      const after = await store().list('ls/', { startAfter: 'ls/2026/01/31/0000000000001.json' })
      assert.deepEqual(after.keys, [
        'ls/2026/01/31/0000000000002.json',
        'ls/2026/02/01/0000000000003.json',
        'ls/2027/01/01/0000000000001.json',
      ])
      // A start-after that is not a key itself (a floor inside a later folder).
      const floor = await store().list('ls/', { startAfter: 'ls/2026/01/31/0000000000001' })
      assert.deepEqual(floor.keys.slice(0, 1), ['ls/2026/01/31/0000000000001.json'])

      const first = await store().list('ls/', { limit: 2 })
      assert.deepEqual(first.keys, [
        'ls/2026/01/30/0000000000001.json',
        'ls/2026/01/31/0000000000001.json',
      ])
      assert.equal(first.next, 'ls/2026/01/31/0000000000001.json')
      const partial = await store().list('ls/2026/01/3')
      assert.equal(partial.keys.length, 3)
      assert.deepEqual((await store().list('nothing-here/')).keys, [])
    })

    test('keys with unicode, spaces and reserved characters round trip', async () => {
      const key = 'odd/ünï cødé+%2F:=&~(x)!.json'
      assert.equal(await store().putIfAbsent(key, bytes('odd')), 'created')
      assert.equal(text((await store().get(key))?.body ?? new Uint8Array()), 'odd')
      assert.deepEqual((await store().list('odd/')).keys, [key])
    })

    test('conditional overwrite: create, swap on the current tag, refuse a stale or missing tag', async () => {
      const created = await store().putIfMatch('cas/cp.json', bytes('v1'), null)
      assert.equal(created.outcome, 'written')
      assert.equal(
        (await store().putIfMatch('cas/cp.json', bytes('v1b'), null)).outcome,
        'precondition_failed',
      )
      const current = await store().get('cas/cp.json')
      assert.ok(current)
      const swapped = await store().putIfMatch('cas/cp.json', bytes('v2'), current.etag)
      assert.equal(swapped.outcome, 'written')
      assert.equal(
        (await store().putIfMatch('cas/cp.json', bytes('v3'), current.etag)).outcome,
        'precondition_failed',
      )
      assert.equal(text((await store().get('cas/cp.json'))?.body ?? new Uint8Array()), 'v2')
      assert.equal(
        (await store().putIfMatch('cas/none.json', bytes('x'), current.etag)).outcome,
        'precondition_failed',
      )
    })
  })
