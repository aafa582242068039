import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import type { ObjectStore } from '../../src/core/ports/object-store.ts'
import { createFsObjectStore } from '../../src/adapters/object-store/fs/fs-object-store.ts'
import { createS3ObjectStore } from '../../src/adapters/object-store/s3/s3-object-store.ts'
import type { S3ObjectStore } from '../../src/adapters/object-store/s3/s3-object-store.ts'
import type { AdapterCase } from './contract.ts'
import { s3Targets, uniqueName } from './services.ts'

/** Removes every object of a test bucket, then the bucket. */
export const dropBucket = async (store: S3ObjectStore): Promise<void> => {
  for (;;) {
    const page = await store.list('', { limit: 1000 })
    if (page.keys.length === 0) break
    await Promise.all(
      page.keys.map((key) => store.client.request({ method: 'DELETE', bucket: store.bucket, key })),
    )
  }
  await store.client.request({ method: 'DELETE', bucket: store.bucket })
}

export const fsStoreCase = (): AdapterCase<ObjectStore> => {
  let dir: string | undefined
  return {
    name: 'filesystem',
    async create() {
      dir = await mkdtemp(path.join(tmpdir(), 'cairn-fs-'))
      return createFsObjectStore({ root: dir })
    },
    async cleanup() {
      if (dir !== undefined) await rm(dir, { recursive: true, force: true })
    },
  }
}

export const s3StoreCases = (): AdapterCase<ObjectStore>[] =>
  s3Targets().map((target) => {
    let store: S3ObjectStore | undefined
    let cleanupStore: S3ObjectStore | undefined
    const bucket = uniqueName(`cairn-test-${target.name}`)
    const options = {
      endpoint: target.endpoint,
      region: target.region,
      credentials: { accessKeyId: target.accessKeyId, secretAccessKey: target.secretAccessKey },
      bucket,
    }
    return {
      name: `S3 (${target.name})`,
      async create() {
        store = await createS3ObjectStore(options)
        return store
      },
      async cleanup() {
        cleanupStore = await createS3ObjectStore({ ...options, createBucket: false })
        await dropBucket(cleanupStore)
        await cleanupStore.close()
      },
    }
  })

/** Every object-store adapter: the filesystem and S3 on two independent servers. */
export const objectStoreCases = (): AdapterCase<ObjectStore>[] => [fsStoreCase(), ...s3StoreCases()]
