import assert from 'node:assert/strict'
import { test } from 'node:test'
import { ErrorCode, isCairnError } from '../../src/core/errors.ts'
import type { ObjectStore } from '../../src/core/ports/object-store.ts'
import { assertConformant, probeObjectStore } from '../../src/event-store/probe.ts'

/** A backend that accepts conditional headers and ignores them (as some S3 look-alikes do). */
const ignoringConditions = (): ObjectStore => {
  const objects = new Map<string, Uint8Array>()
  const close = async () => {}
  return {
    describe: 'fake://ignores-conditions',
    putIfAbsent: async (key, body) => {
      objects.set(key, body)
      return 'created'
    },
    putIfMatch: async (key, body) => {
      objects.set(key, body)
      return { outcome: 'written', etag: '"x"' }
    },
    get: async (key) => {
      const body = objects.get(key)
      return body === undefined ? null : { body, etag: '"x"' }
    },
    list: async () => ({ keys: [] }),
    close,
    [Symbol.asyncDispose]: close,
  }
}

test('a backend that ignores conditional writes fails the probe, and each failed check is named', async () => {
  const report = await probeObjectStore(ignoringConditions())
  assert.equal(report.ok, false)
  assert.deepEqual(report.failed, [
    'concurrent-create-only',
    'create-only-existing',
    'conditional-missing',
    'conditional-stale',
  ])
})

test('such a backend is refused with a message naming the checks, unless the operator overrides', async () => {
  await assert.rejects(assertConformant(ignoringConditions()), (error: unknown) => {
    assert.ok(isCairnError(error, ErrorCode.BACKEND_NONCONFORMANT))
    assert.match(error.message, /concurrent-create-only/)
    assert.match(error.message, /EVENT_STORE_ALLOW_NONCONFORMANT_BACKEND/)
    return true
  })
  const logged: string[] = []
  const logger = {
    debug: () => {},
    info: () => {},
    warn: () => {},
    error: (_: unknown, m: string) => logged.push(m),
    child: () => logger,
  }
  const report = await assertConformant(ignoringConditions(), { allowNonconformant: true, logger })
  assert.equal(report.ok, false)
  assert.equal(logged.length, 1)
})
