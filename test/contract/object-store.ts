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

    test('list returns keys under a prefix in lexical order, after startAfter, page by page', async () => {
      const keys = [
        'ls/b/2.json',
        'ls/a/1.json',
        'ls/a-b.json',
        'ls/a/0.json',
        'ls/c.json',
        'lsx/no.json',
      ]
      for (const k of keys) await store().putIfAbsent(k, bytes(k))
      const all = []
      for await (const k of listAll(store(), 'ls/')) all.push(k)
      assert.deepEqual(all, [
        'ls/a-b.json',
        'ls/a/0.json',
        'ls/a/1.json',
        'ls/b/2.json',
        'ls/c.json',
      ])

      const after = await store().list('ls/', { startAfter: 'ls/a/0.json' })
      assert.deepEqual(after.keys, ['ls/a/1.json', 'ls/b/2.json', 'ls/c.json'])

      const first = await store().list('ls/', { limit: 2 })
      assert.deepEqual(first.keys, ['ls/a-b.json', 'ls/a/0.json'])
      assert.equal(first.next, 'ls/a/0.json')
      const partial = await store().list('ls/a')
      assert.deepEqual(partial.keys, ['ls/a-b.json', 'ls/a/0.json', 'ls/a/1.json'])
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
