import assert from 'node:assert/strict'
import { test } from 'node:test'
import { loadConfig, redactedConfig } from '../../src/config/env.ts'
import { ErrorCode, isCairnError } from '../../src/core/errors.ts'

const problemsOf = (env: Record<string, string>): string[] => {
  try {
    loadConfig(env)
  } catch (error) {
    assert.ok(isCairnError(error, ErrorCode.INVALID_CONFIG))
    return error.details.problems as string[]
  }
  return []
}

test("the seed's defaults apply when nothing is set (embedded mode)", () => {
  const c = loadConfig({})
  assert.equal(c.mode, 'embedded')
  assert.equal(c.eventStore.bucket, 'spice-event-store')
  assert.equal(c.sequencing.schema, 'spice_event_registry')
  assert.equal(c.sequencing.handlerPrefix, 'write_side')
  assert.equal(c.sequencing.allocatorMode, 'postgres')
  assert.equal(c.registry.leaseTimeoutSeconds, 900)
  assert.equal(c.registry.heartbeatIntervalSeconds, 30)
  assert.equal(c.publisher.kafkaFlushTimeoutSeconds, 10)
  assert.equal(c.publisher.metricsLogIntervalSeconds, 30)
  assert.equal(c.publisher.kafkaFlushBatchSize, c.publisher.batchSize)
  assert.equal(c.eventStore.idempotencyMismatchMode, 'error')
  assert.ok(Object.isFrozen(c))
})

test('the worker batch size: 500 by default, 1 to 10,000', () => {
  assert.equal(loadConfig({}).worker.batchSize, 500)
  assert.equal(loadConfig({ WORKER_BATCH_SIZE: '2000' }).worker.batchSize, 2000)
  assert.equal(problemsOf({ WORKER_BATCH_SIZE: '0' }).length, 1)
  assert.match(problemsOf({ WORKER_BATCH_SIZE: '20000' })[0] ?? '', /WORKER_BATCH_SIZE/)
  assert.equal(loadConfig({}).worker.concurrency, 32)
  assert.equal(loadConfig({}).databasePrepare, true)
  assert.equal(loadConfig({ CAIRN_DATABASE_PREPARE: 'false' }).databasePrepare, false)
  assert.equal(loadConfig({ WORKER_CONCURRENCY: '4' }).worker.concurrency, 4)
  assert.match(problemsOf({ WORKER_CONCURRENCY: '0' })[0] ?? '', /WORKER_CONCURRENCY/)
  assert.equal(loadConfig({}).worker.commitIntervalMs, 500)
  assert.equal(loadConfig({ WORKER_COMMIT_INTERVAL_MS: '0' }).worker.commitIntervalMs, 0)
  assert.match(
    problemsOf({ WORKER_COMMIT_INTERVAL_MS: '-1' })[0] ?? '',
    /WORKER_COMMIT_INTERVAL_MS/,
  )
})

test('the flush batch size defaults to the batch size', () => {
  assert.equal(loadConfig({ EVENT_PUBLISHER_BATCH_SIZE: '500' }).publisher.kafkaFlushBatchSize, 500)
})

test('every problem is reported at once; removed flags say they were removed', () => {
  const problems = problemsOf({
    ENABLE_S3_EVENT_STORE: 'true',
    ENABLE_DUAL_WRITE: 'false',
    PROCESSED_EVENT_LEASE_TIMEOUT_SECONDS: '10',
    PROCESSED_EVENT_HEARTBEAT_INTERVAL_SECONDS: '30',
    EVENT_STORE_SEQUENCE_ALLOCATOR_MODE: 's3',
    EVENT_PUBLISHER_BATCH_SIZE: 'many',
    ENABLE_PROCESSED_EVENT_REGISTRY: 'false',
    EVENT_STORE_IDEMPOTENCY_MISMATCH_MODE: 'shrug',
  })
  assert.equal(problems.length, 7, problems.join('\n'))
  assert.match(problems.join('\n'), /ENABLE_S3_EVENT_STORE was removed/)
  assert.match(problems.join('\n'), /ENABLE_DUAL_WRITE was removed/)
  assert.match(problems.join('\n'), /HEARTBEAT_INTERVAL_SECONDS=30 must be shorter/)
})

test('distributed mode requires its connection settings and never shows secrets', () => {
  const problems = problemsOf({ CAIRN_MODE: 'distributed' })
  for (const name of [
    'CAIRN_S3_ENDPOINT',
    'CAIRN_S3_ACCESS_KEY_ID',
    'CAIRN_S3_SECRET_ACCESS_KEY',
    'CAIRN_DATABASE_URL',
    'CAIRN_KAFKA_BROKERS',
  ]) {
    assert.ok(
      problems.some((p) => p.startsWith(name)),
      `no problem for ${name}`,
    )
  }
  const c = loadConfig({
    CAIRN_MODE: 'distributed',
    CAIRN_S3_ENDPOINT: 'http://127.0.0.1:9000',
    CAIRN_S3_ACCESS_KEY_ID: 'id',
    CAIRN_S3_SECRET_ACCESS_KEY: 'very-secret',
    CAIRN_DATABASE_URL: 'postgres://u:hunter2@127.0.0.1/db',
    CAIRN_KAFKA_BROKERS: '127.0.0.1:9092, 127.0.0.1:9093',
  })
  assert.deepEqual(c.kafkaBrokers, ['127.0.0.1:9092', '127.0.0.1:9093'])
  const shown = JSON.stringify(redactedConfig(c))
  assert.ok(!shown.includes('very-secret') && !shown.includes('hunter2'))
})

test('dependency timeouts and the OMS in-flight bound: defaults, overrides, bounds', () => {
  const distributed = {
    CAIRN_MODE: 'distributed',
    CAIRN_S3_ENDPOINT: 'http://127.0.0.1:9000',
    CAIRN_S3_ACCESS_KEY_ID: 'id',
    CAIRN_S3_SECRET_ACCESS_KEY: 'secret',
    CAIRN_DATABASE_URL: 'postgres://u:p@127.0.0.1/db',
    CAIRN_KAFKA_BROKERS: '127.0.0.1:9092',
  }
  const c = loadConfig(distributed)
  assert.equal(c.databaseConnectTimeoutMs, 10_000)
  assert.equal(c.databaseQueryTimeoutMs, 30_000)
  assert.equal(c.s3?.requestTimeoutMs, 30_000)
  assert.equal(c.oms.maxInFlight, 1024)
  const set = loadConfig({
    ...distributed,
    CAIRN_DATABASE_CONNECT_TIMEOUT_SECONDS: '3',
    CAIRN_DATABASE_QUERY_TIMEOUT_SECONDS: '0',
    CAIRN_S3_REQUEST_TIMEOUT_SECONDS: '5',
    OMS_MAX_IN_FLIGHT: '64',
  })
  assert.equal(set.databaseConnectTimeoutMs, 3_000)
  assert.equal(set.databaseQueryTimeoutMs, 0)
  assert.equal(set.s3?.requestTimeoutMs, 5_000)
  assert.equal(set.oms.maxInFlight, 64)
  const problems = problemsOf({
    ...distributed,
    CAIRN_DATABASE_CONNECT_TIMEOUT_SECONDS: '0',
    CAIRN_S3_REQUEST_TIMEOUT_SECONDS: 'soon',
    OMS_MAX_IN_FLIGHT: '0',
  })
  assert.equal(problems.length, 3, problems.join('\n'))
})

test('tracing: off without an OTLP endpoint; the OTEL_* variables when one is set', () => {
  assert.equal(loadConfig({}).tracing, undefined)
  assert.equal(
    loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_SDK_DISABLED: 'true' }).tracing,
    undefined,
  )
  assert.equal(
    loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_TRACES_EXPORTER: 'none' })
      .tracing,
    undefined,
  )
  const on = loadConfig({
    OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318/',
    OTEL_EXPORTER_OTLP_HEADERS: 'api-key=s%3Dcret,x-team=core',
    OTEL_SERVICE_NAME: 'orders',
    OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
    OTEL_TRACES_SAMPLER_ARG: '0.25',
  }).tracing
  assert.deepEqual(on, {
    url: 'http://collector:4318/v1/traces',
    headers: { 'api-key': 's=cret', 'x-team': 'core' },
    serviceName: 'orders',
    sampler: { ratio: 0.25, parentBased: true },
  })
  const traces = loadConfig({
    OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318',
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://traces.example/v1/t',
    OTEL_TRACES_SAMPLER: 'always_off',
  }).tracing
  assert.equal(traces?.url, 'https://traces.example/v1/t')
  assert.deepEqual(traces?.sampler, { ratio: 0, parentBased: false })
  // Header values are secrets.
  const shown = JSON.stringify(
    redactedConfig(
      loadConfig({
        OTEL_EXPORTER_OTLP_ENDPOINT: 'http://user:topsecret@c:4318',
        OTEL_EXPORTER_OTLP_HEADERS: 'api-key=topsecret',
      }),
    ),
  )
  assert.ok(!shown.includes('topsecret'))
  const problems = problemsOf({
    OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318',
    OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc',
    OTEL_EXPORTER_OTLP_HEADERS: 'novalue',
    OTEL_TRACES_SAMPLER: 'sometimes',
  })
  assert.equal(problems.length, 4, problems.join('\n'))
  assert.ok(!problems.join('\n').includes('novalue'))
  assert.match(
    problemsOf({
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318',
      OTEL_TRACES_SAMPLER: 'traceidratio',
      OTEL_TRACES_SAMPLER_ARG: '2',
    })[0] ?? '',
    /OTEL_TRACES_SAMPLER_ARG/,
  )
})
