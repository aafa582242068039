import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { createS3ObjectStore } from '../../src/adapters/object-store/s3/s3-object-store.ts'
import { parseMinioRequests, sampleMinioRequests } from '../../bench/lib/services.ts'
import { dropBucket } from '../support/adapters.ts'
import { s3Targets, uniqueName } from '../support/services.ts'

// The benchmark's server-side request counts (column `minio put/get/list`): MinIO's own counters,
// read from its metrics endpoint, which scripts/services.sh makes readable without a token.

describe('benchmark: MinIO request counters', () => {
  it('parses the S3 series of a metrics page by API, in lower case', () => {
    const page = [
      '# HELP minio_api_requests_total Total number of requests in the current MinIO server instance',
      '# TYPE minio_api_requests_total counter',
      'minio_api_requests_total{name="PutObject",server="127.0.0.1:59000",type="s3"} 13663',
      'minio_api_requests_total{name="GetObject",server="127.0.0.1:59000",type="s3"} 575',
      'minio_api_requests_total{name="ListObjectsV2",server="127.0.0.1:59000",type="s3"} 298',
      'minio_api_requests_total{name="PutObject",server="127.0.0.2:59000",type="s3"} 7',
      'minio_api_requests_total{name="ServerInfo",server="127.0.0.1:59000",type="admin"} 3',
      'minio_api_requests_4xx_errors_total{name="GetObject",server="127.0.0.1:59000",type="s3"} 3',
    ].join('\n')
    assert.deepEqual(parseMinioRequests(page), {
      putobject: 13_670,
      getobject: 575,
      listobjectsv2: 298,
    })
    assert.deepEqual(parseMinioRequests('not a metrics page'), {})
  })

  it('counts the PUTs, GETs and LISTs a client sends to the MinIO that services.sh runs', async () => {
    const target = s3Targets().find((t) => t.name === 'minio')
    assert.ok(target !== undefined)
    const store = await createS3ObjectStore({
      endpoint: target.endpoint,
      region: target.region,
      credentials: { accessKeyId: target.accessKeyId, secretAccessKey: target.secretAccessKey },
      bucket: uniqueName('cairn-test-metrics'),
    })
    try {
      const before = await sampleMinioRequests(target.endpoint)
      assert.ok(before !== null, 'MinIO metrics are not readable: is it started by services.sh?')
      for (let i = 0; i < 3; i++) await store.putIfAbsent(`k/${i}`, new Uint8Array([i]))
      assert.ok((await store.get('k/0')) !== null)
      await store.list('k/')
      const after = await sampleMinioRequests(target.endpoint)
      assert.ok(after !== null)
      // Other test files may use the same server meanwhile: at least ours are counted, at once.
      const delta = (api: string): number => (after[api] ?? 0) - (before[api] ?? 0)
      assert.ok(delta('putobject') >= 3, `putobject +${delta('putobject')}`)
      assert.ok(delta('getobject') >= 1, `getobject +${delta('getobject')}`)
      assert.ok(delta('listobjectsv2') >= 1, `listobjectsv2 +${delta('listobjectsv2')}`)
    } finally {
      await dropBucket(store)
      await store.close()
    }
  })

  it('is null for an endpoint that serves no MinIO metrics', async () => {
    assert.equal(await sampleMinioRequests(undefined), null)
    const seaweed = s3Targets().find((t) => t.name === 'seaweedfs')
    assert.ok(seaweed !== undefined)
    assert.equal(await sampleMinioRequests(seaweed.endpoint), null)
  })
})
