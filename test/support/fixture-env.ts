import { createS3ObjectStore } from '../../src/adapters/object-store/s3/s3-object-store.ts'
import type { S3ObjectStore } from '../../src/adapters/object-store/s3/s3-object-store.ts'

/** For helper processes: a required environment variable, or a clear error. */
export const fixtureEnv = (name: string): string => {
  const v = process.env[name]
  if (v === undefined) throw new Error(`${name} is not set`)
  return v
}

/** The test bucket TEST_BUCKET on MinIO, as the spawning test created it. */
export const openFixtureBucket = (): Promise<S3ObjectStore> =>
  createS3ObjectStore({
    endpoint: fixtureEnv('CAIRN_S3_ENDPOINT'),
    region: 'us-east-1',
    credentials: {
      accessKeyId: fixtureEnv('CAIRN_S3_ACCESS_KEY_ID'),
      secretAccessKey: fixtureEnv('CAIRN_S3_SECRET_ACCESS_KEY'),
    },
    bucket: fixtureEnv('TEST_BUCKET'),
    createBucket: false,
  })
