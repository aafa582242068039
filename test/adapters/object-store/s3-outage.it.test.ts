import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { createS3ObjectStore } from '../../../src/adapters/object-store/s3/s3-object-store.ts'
import { ErrorCode, isCairnError, isDependencyOutage } from '../../../src/core/errors.ts'
import { startFreezeProxy } from '../../support/freeze-proxy.ts'
import type { FreezeProxy } from '../../support/freeze-proxy.ts'
import { s3Targets, uniqueName } from '../../support/services.ts'

/**
 * The S3 client's error paths against MinIO behind a TCP relay: a server that hangs (the relay
 * freezes, as SIGSTOP would) and a server that is gone (the relay cuts). Every call fails within
 * the timeout with a retryable OBJECT_STORE_UNAVAILABLE, and works again once the server is back.
 */
const minio = s3Targets()[0] as NonNullable<ReturnType<typeof s3Targets>[0]>

const open = (proxy: FreezeProxy, bucket: string, timeoutMs: number) =>
  createS3ObjectStore({
    endpoint: `http://${proxy.host}:${proxy.port}`,
    region: minio.region,
    credentials: { accessKeyId: minio.accessKeyId, secretAccessKey: minio.secretAccessKey },
    bucket,
    timeoutMs,
  })

const unavailable = (error: unknown): boolean =>
  isCairnError(error, ErrorCode.OBJECT_STORE_UNAVAILABLE) &&
  error.retryable &&
  isDependencyOutage(error)

describe('S3 client: outages', () => {
  test('a server that hangs: PUT, GET and LIST fail within the timeout, also those waiting for a socket; then work again', async () => {
    const url = new URL(minio.endpoint)
    await using proxy = await startFreezeProxy({ host: url.hostname, port: Number(url.port) })
    const timeoutMs = 2_000
    await using store = await open(proxy, uniqueName('cairn-s3-hang'), timeoutMs)
    assert.equal(await store.putIfAbsent('a', new TextEncoder().encode('1')), 'created')
    proxy.freeze()
    const started = Date.now()
    const timed = <T>(p: Promise<T>) =>
      p.then(
        () => assert.fail('answered while the server hangs'),
        (error: unknown) => ({ error, ms: Date.now() - started }),
      )
    // More requests than sockets kept (128): some wait for a socket all along. The GET goes on
    // the kept-alive socket of the first PUT.
    const outcomes = await Promise.all([
      timed(store.get('a')),
      timed(store.putIfAbsent('b', new TextEncoder().encode('2'))),
      timed(store.list('')),
      ...Array.from({ length: 140 }, (_, i) => timed(store.get(`k${i}`))),
    ])
    for (const o of outcomes) assert.ok(unavailable(o.error), String(o.error))
    // Each fails after one timeout: not one more for a resend on a fresh socket, nor one more
    // after waiting for a socket.
    const slowest = Math.max(...outcomes.map((o) => o.ms))
    assert.ok(slowest < 1.75 * timeoutMs, `the slowest call failed after ${slowest} ms`)
    proxy.restore()
    assert.equal(new TextDecoder().decode((await store.get('a'))?.body), '1')
    // The PUT that hung may or may not have landed; a create-only retry tells.
    const again = await store.putIfAbsent('b', new TextEncoder().encode('2'))
    assert.ok(again === 'created' || again === 'exists')
    assert.deepEqual((await store.list('')).keys, ['a', 'b'])
  })

  test('a server that is gone: calls fail at once, retryably, and work again when it is back', async () => {
    const url = new URL(minio.endpoint)
    await using proxy = await startFreezeProxy({ host: url.hostname, port: Number(url.port) })
    await using store = await open(proxy, uniqueName('cairn-s3-gone'), 30_000)
    await store.putIfAbsent('a', new TextEncoder().encode('1'))
    proxy.cut()
    const started = Date.now()
    await assert.rejects(store.get('a'), unavailable)
    await assert.rejects(store.putIfAbsent('b', new TextEncoder().encode('2')), unavailable)
    assert.ok(Date.now() - started < 5_000)
    proxy.restore()
    assert.equal(await store.putIfAbsent('b', new TextEncoder().encode('2')), 'created')
  })
})
