import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createFsObjectStore } from '../adapters/object-store/fs/fs-object-store.ts'
import { createS3ObjectStore } from '../adapters/object-store/s3/s3-object-store.ts'
import { migrate } from '../adapters/sql/migrations.ts'
import { createPgSql } from '../adapters/sql/pg.ts'
import { createPgliteSql } from '../adapters/sql/pglite.ts'
import { createInProcessBus } from '../adapters/bus/in-process-bus.ts'
import { createKafkaBus } from '../adapters/bus/kafka-bus.ts'
import { CairnError, ErrorCode, isCairnError } from '../core/errors.ts'
import type { Bus } from '../core/ports/bus.ts'
import type { Logger } from '../core/ports/logger.ts'
import type { ObjectStore } from '../core/ports/object-store.ts'
import type { Sql } from '../core/ports/sql.ts'
import { noopTracer } from '../core/ports/tracer.ts'
import type { Tracer } from '../core/ports/tracer.ts'
import { createEventStore } from '../event-store/event-store.ts'
import type { EventStore } from '../event-store/event-store.ts'
import { encodeCommitNotices } from '../event-store/segment.ts'
import { assertConformant } from '../event-store/probe.ts'
import { assertCurrentLayout } from '../event-store/reconcile.ts'
import { presenceRecorder } from '../publisher/presence.ts'
import { createPublisher } from '../publisher/publisher.ts'
import type { Publisher } from '../publisher/publisher.ts'
import { createSequenceAllocator, databaseClock } from '../sequencing/allocator.ts'
import type { CairnConfig } from './env.ts'
import { isWorthWaiting, noWait } from './startup.ts'
import type { StartupGate } from './startup.ts'

/**
 * The composition root of the write side: the configured object store and SQL adapters, the
 * registry migrations, the conformance probe, the allocator and the event store. `close()` closes
 * in reverse order of opening, under a deadline.
 */
export type WriteSide = {
  readonly objectStore: ObjectStore
  readonly sql: Sql
  readonly eventStore: EventStore
  /** The process's tracer (the caller opened it and closes it), used by all that runs on this. */
  readonly tracer: Tracer
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

/** Closes resources in reverse order; each gets its share of the deadline, errors are logged. */
export const closeAll = async (
  resources: readonly { readonly name: string; close(): Promise<void> }[],
  logger: Logger,
  deadlineMs = 10_000,
): Promise<void> => {
  for (const r of [...resources].reverse()) {
    let timer: ReturnType<typeof setTimeout> | undefined
    try {
      await Promise.race([
        r.close(),
        new Promise<void>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`did not close within ${deadlineMs} ms`)),
            deadlineMs,
          )
        }),
      ])
    } catch (error) {
      logger.error({ resource: r.name, err: String(error) }, 'close failed')
    } finally {
      clearTimeout(timer)
    }
  }
}

export const openObjectStore = async (config: CairnConfig): Promise<ObjectStore> =>
  config.mode === 'embedded' || config.s3 === undefined
    ? createFsObjectStore({ root: path.join(config.dataDir, 'bucket', config.eventStore.bucket) })
    : createS3ObjectStore({
        endpoint: config.s3.endpoint,
        region: config.s3.region,
        credentials: {
          accessKeyId: config.s3.accessKeyId,
          secretAccessKey: config.s3.secretAccessKey,
        },
        bucket: config.eventStore.bucket,
        timeoutMs: config.s3.requestTimeoutMs,
      })

/**
 * The migrations of the schema (concurrent starters take turns under migrate's advisory lock).
 * The server's refusal (authentication, a missing database) becomes a `SQL_ERROR` that says so,
 * printed without a stack trace; what is worth waiting for stays as it is.
 */
export const migrateSchema = (sql: Sql, schema: string): Promise<string[]> =>
  migrate(sql, schema).catch((error: unknown) => {
    throw isCairnError(error) || isWorthWaiting(error)
      ? error
      : new CairnError(
          ErrorCode.SQL_ERROR,
          `${sql.describe} refused: ${error instanceof Error ? error.message : String(error)}`,
          { cause: error },
        )
  })

/** The object store as the start-up log names it (no secrets). */
const describeObjectStore = (config: CairnConfig): string =>
  config.mode === 'embedded' || config.s3 === undefined
    ? `the bucket directory under ${config.dataDir}`
    : `the object store at ${config.s3.endpoint} (bucket ${config.eventStore.bucket})`

export const openSql = async (config: CairnConfig): Promise<Sql> =>
  config.mode === 'embedded' || config.databaseUrl === undefined
    ? createPgliteSql({ dataDir: path.join(config.dataDir, 'pglite') })
    : createPgSql({
        connectionString: config.databaseUrl,
        prepare: config.databasePrepare,
        connectTimeoutMs: config.databaseConnectTimeoutMs,
        queryTimeoutMs: config.databaseQueryTimeoutMs,
      })

export const openWriteSide = async (
  config: CairnConfig,
  logger: Logger,
  options: {
    readonly probe?: boolean
    /** How to wait for the object store and PostgreSQL (default: try once). */
    readonly wait?: StartupGate['wait']
    /** A database the caller opened and closes (the test kit shares one); default: the config's. */
    readonly sql?: Sql
    /** The process's tracer (config/tracing.ts); default: no tracing. */
    readonly tracer?: Tracer
  } = {},
): Promise<WriteSide> => {
  const wait = options.wait ?? noWait
  const tracer = options.tracer ?? noopTracer
  const opened: { name: string; close(): Promise<void> }[] = []
  try {
    const objectStore = await wait(describeObjectStore(config), () => openObjectStore(config))
    opened.push({ name: 'object store', close: () => objectStore.close() })
    if (options.probe ?? true) {
      await wait(`the conformance probe of ${objectStore.describe}`, () =>
        assertConformant(objectStore, {
          allowNonconformant: config.eventStore.allowNonconformantBackend,
          logger,
        }),
      )
    }
    await wait(`the layout of ${objectStore.describe}`, () => assertCurrentLayout(objectStore))
    if (
      options.sql === undefined &&
      config.mode === 'embedded' &&
      !existsSync(path.join(config.dataDir, 'pglite'))
    ) {
      logger.info(
        { dir: path.join(config.dataDir, 'pglite') },
        'creating the embedded PostgreSQL (PGlite) database; the first start takes a few seconds',
      )
    }
    const sql = options.sql ?? (await openSql(config))
    if (options.sql === undefined) opened.push({ name: 'sql', close: () => sql.close() })
    const applied = await wait(`the database (${sql.describe})`, () =>
      migrateSchema(sql, config.sequencing.schema),
    )
    if (applied.length > 0)
      logger.info({ applied, schema: config.sequencing.schema }, 'migrations applied')
    const eventStore = createEventStore({
      objectStore,
      allocator: createSequenceAllocator({ sql, schema: config.sequencing.schema }),
      handlerPrefix: config.sequencing.handlerPrefix,
      idempotencyMismatchMode: config.eventStore.idempotencyMismatchMode,
      maxSegmentDelayMs: config.eventStore.maxIndexDelayMs,
      logger,
      tracer,
    })
    opened.push({ name: 'event store', close: () => eventStore.close() })
    if (sql.listen !== undefined) {
      // Publishers in other processes wake on this instead of waiting for their next poll.
      const channel = commitChannel(config)
      eventStore.onCommit((notice) => {
        // The entries ride along when they fit in a few payloads, so that publisher needs no GET;
        // the payloads of one commit go in one statement, one transaction (delivered together).
        const payloads = encodeCommitNotices(notice.segmentKey, notice.entries)
        const sent =
          payloads.length === 1
            ? sql.query('SELECT pg_notify($1, $2)', [channel, payloads[0]])
            : sql.query('SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p', [channel, payloads])
        // Returned: the events are marked stored only once this is committed (P2).
        return sent.catch((error: unknown) => {
          logger.warn({ err: String(error) }, 'could not announce a commit')
          throw error
        })
      })
    }
    const close = () => closeAll(opened, logger)
    return { objectStore, sql, eventStore, tracer, close, [Symbol.asyncDispose]: close }
  } catch (error) {
    await closeAll(opened, logger)
    throw error
  }
}

/** The NOTIFY channel of one deployment's commits (its schema and bucket). */
export const commitChannel = (config: CairnConfig): string =>
  `cairn_commit_${createHash('sha256')
    .update(`${config.sequencing.schema}/${config.eventStore.bucket}`)
    .digest('hex')
    .slice(0, 16)}`

export const openBus = (config: CairnConfig, logger: Logger): Bus =>
  config.mode === 'embedded' || config.kafkaBrokers === undefined
    ? createInProcessBus()
    : createKafkaBus({ brokers: config.kafkaBrokers, logger })

/** The publisher over the write side's bucket; in one process, woken by each commit. */
export const openPublisher = (
  config: CairnConfig,
  ws: WriteSide,
  bus: Bus,
  logger: Logger,
): Publisher => {
  const p = config.publisher
  const publisher = createPublisher({
    objectStore: ws.objectStore,
    bus,
    logger,
    keyClock: databaseClock(ws.sql),
    maxClockUncertaintyMs: p.maxClockSkewSeconds * 1000,
    routes: p.routes,
    defaultTopic: p.defaultTopic,
    topicPrefix: p.topicPrefix,
    partitions: p.topicPartitions,
    batchSize: p.batchSize,
    flushBatchSize: p.kafkaFlushBatchSize,
    flushTimeoutMs: p.kafkaFlushTimeoutSeconds * 1000,
    pollIntervalMs: p.pollIntervalSeconds * 1000,
    settleMs: config.eventStore.maxIndexDelayMs + p.maxClockSkewSeconds * 1000,
    dedupMaxEvents: p.dedupMaxEvents,
    dedupCheckpointMaxEvents: p.dedupCheckpointMaxEvents,
    metricsLogIntervalMs: p.metricsLogIntervalSeconds * 1000,
    tracer: ws.tracer,
    presence: presenceRecorder(ws.sql, config.sequencing.schema, os.hostname()),
  })
  ws.eventStore.onCommit((notice) => publisher.noteCommit(notice))
  return publisher
}
