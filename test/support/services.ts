import { randomBytes } from 'node:crypto'

/**
 * Connection settings of the real services, as `scripts/services.sh env` prints them.
 * Integration tests fail (never skip) when a setting is missing: `npm test` starts the services.
 */
const required = (name: string): string => {
  const value = process.env[name]
  if (value === undefined || value === '') {
    throw new Error(
      `${name} is not set. Integration tests need the real services: run them with \`npm test\`, ` +
        'which starts them, or `eval "$(bash scripts/services.sh env)"` after `bash scripts/services.sh up`.',
    )
  }
  return value
}

export type S3Target = {
  readonly name: string
  readonly endpoint: string
  readonly accessKeyId: string
  readonly secretAccessKey: string
  readonly region: string
}

export const s3Targets = (): S3Target[] => [
  {
    name: 'minio',
    endpoint: required('CAIRN_S3_ENDPOINT'),
    accessKeyId: required('CAIRN_S3_ACCESS_KEY_ID'),
    secretAccessKey: required('CAIRN_S3_SECRET_ACCESS_KEY'),
    region: process.env.CAIRN_S3_REGION ?? 'us-east-1',
  },
  {
    name: 'seaweedfs',
    endpoint: required('CAIRN_SEAWEEDFS_S3_ENDPOINT'),
    accessKeyId: required('CAIRN_SEAWEEDFS_S3_ACCESS_KEY_ID'),
    secretAccessKey: required('CAIRN_SEAWEEDFS_S3_SECRET_ACCESS_KEY'),
    region: process.env.CAIRN_S3_REGION ?? 'us-east-1',
  },
]

export const databaseUrl = (): string => required('CAIRN_DATABASE_URL')

export const kafkaBrokers = (): string[] => required('CAIRN_KAFKA_BROKERS').split(',')

/** A unique lower-case name for a bucket, topic, schema or prefix of one test. */
export const uniqueName = (stem: string): string =>
  `${stem}-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`
