import { hostname } from 'node:os'
import { createPrometheusMetrics } from '../adapters/metrics/prometheus.ts'
import type { PrometheusMetrics } from '../adapters/metrics/prometheus.ts'
import type { Bus } from '../core/ports/bus.ts'
import type { Logger } from '../core/ports/logger.ts'
import { createCommandHandler } from '../domain/command-handler.ts'
import { GROUPS, HANDLERS, TOPICS } from '../domain/model.ts'
import { createProjection } from '../domain/projection.ts'
import { createOmsApp } from '../http/app.ts'
import type { HttpApp, OmsApp, ReadyReport } from '../http/app.ts'
import { createOpsApp } from '../http/ops.ts'
import { pipelineOverview } from '../operate/overview.ts'
import { resetCheckpoint } from '../publisher/checkpoint.ts'
import type { TopicLag } from '../operate/overview.ts'
import { databaseClock } from '../sequencing/allocator.ts'
import { consoleAssets } from './console-assets.ts'
import { createProcessedEventRegistry } from '../registry/processed-events.ts'
import type { ProcessedEventRegistry } from '../registry/processed-events.ts'
import { parseSegmentKey } from '../event-store/keys.ts'
import { createNoticeAssembler, decodeCommitNotice } from '../event-store/segment.ts'
import type { AssembledNotice } from '../event-store/segment.ts'
import { createWorker } from '../worker/worker.ts'
import type { Handle, HandleBatch, Worker } from '../worker/worker.ts'
import { closeAll, commitChannel, openBus, openPublisher, openWriteSide } from './compose.ts'
import type { WriteSide } from './compose.ts'
import type { CairnConfig } from './env.ts'
import { noWait } from './startup.ts'
import { openTracer } from './tracing.ts'
import type { StartupGate } from './startup.ts'

/** The reference domain's workers: which topics, group, handler and side effect each runs. */
export const WORKER_ROLES = ['ontology', 'instance', 'projection'] as const
export type WorkerRole = (typeof WORKER_ROLES)[number]

type RoleSpec = {
  readonly handler: string
  readonly group: string
  readonly topics: readonly string[]
  readonly dlq: string
  readonly transactional: boolean
  /** The handler, and its batch form for a transactional one. */
  readonly handlers: (
    ws: WriteSide,
    config: CairnConfig,
    logger: Logger,
  ) => { readonly handle: Handle; readonly handleBatch?: HandleBatch }
}

const ROLES: Readonly<Record<WorkerRole, RoleSpec>> = {
  ontology: {
    handler: HANDLERS.ontology,
    group: GROUPS.ontology,
    topics: [TOPICS.databaseCommands, TOPICS.ontologyCommands],
    dlq: 'ontology-commands-dlq',
    transactional: false,
    handlers: (ws, _c, logger) => ({
      handle: createCommandHandler({ eventStore: ws.eventStore, logger }),
    }),
  },
  instance: {
    handler: HANDLERS.instance,
    group: GROUPS.instance,
    topics: [TOPICS.instanceCommands],
    dlq: 'instance-commands-dlq',
    transactional: false,
    handlers: (ws, _c, logger) => ({
      handle: createCommandHandler({ eventStore: ws.eventStore, logger }),
    }),
  },
  projection: {
    handler: HANDLERS.projection,
    group: GROUPS.projection,
    topics: [TOPICS.ontologyEvents, TOPICS.instanceEvents],
    dlq: 'projection_failures_dlq',
    transactional: true,
    handlers: (_ws, config) => createProjection({ schema: config.sequencing.schema }),
  },
}

/** Every topic the domain uses, so workers can subscribe before the first event is published. */
export const domainTopics = (prefix = ''): string[] => [
  ...new Set(Object.values(ROLES).flatMap((r) => [...r.topics, r.dlq].map((t) => prefix + t))),
]

/** Creates the domain's topics that are missing (other processes may create them at once). */
export const ensureDomainTopics = (config: CairnConfig, bus: Bus): Promise<void> =>
  bus.ensureTopics(
    domainTopics(config.publisher.topicPrefix).map((name) => ({
      name,
      partitions: config.publisher.topicPartitions,
    })),
  )

/**
 * The domain's consumer groups' lag per topic, from the bus; `unknown` when the bus does not
 * answer within 3 s (the overview must not wait for a Kafka that is away).
 */
export const domainConsumerLag =
  (config: CairnConfig, bus: Bus) => async (): Promise<readonly TopicLag[] | 'unknown'> => {
    const prefix = config.publisher.topicPrefix
    const all = Promise.all(
      Object.values(ROLES).map(async (role) => {
        const group = prefix + role.group
        const lags = await bus.lag(
          group,
          role.topics.map((t) => prefix + t),
        )
        return lags.map((l) => ({ group, ...l }))
      }),
    ).then((lists) => lists.flat())
    let timer: ReturnType<typeof setTimeout> | undefined
    const late = new Promise<'unknown'>((resolve) => {
      timer = setTimeout(() => resolve('unknown'), 3_000)
    })
    try {
      return await Promise.race([all.catch(() => 'unknown' as const), late])
    } finally {
      clearTimeout(timer)
    }
  }

/** The registry of one process; its member name is stable across restarts (fast recovery, C2). */
export const openRegistry = (
  config: CairnConfig,
  ws: WriteSide,
  role: string,
): ProcessedEventRegistry =>
  createProcessedEventRegistry({
    sql: ws.sql,
    schema: config.sequencing.schema,
    member: config.memberName ?? `${role}@${hostname()}`,
    leaseMs: config.registry.leaseTimeoutSeconds * 1000,
    ownerTimeoutMs: config.registry.heartbeatIntervalSeconds * 3 * 1000,
  })

/** What makes one worker: its registry name, topics (unprefixed), group, DLQ and side effect. */
export type WorkerSpec = {
  /** Names its registry member (`<role>@<host>` unless CAIRN_MEMBER_NAME). */
  readonly role: string
  readonly handler: string
  readonly topics: readonly string[]
  readonly group: string
  readonly dlq: string
  readonly handle: Handle
  readonly handleBatch?: HandleBatch
  readonly transactional: boolean
}

/** A worker as configured (batching, retries, heartbeats), not yet running; its topics exist. */
export const openWorker = (
  config: CairnConfig,
  ws: WriteSide,
  bus: Bus,
  logger: Logger,
  spec: WorkerSpec,
  metrics?: PrometheusMetrics,
): Worker => {
  const prefix = config.publisher.topicPrefix
  const worker = createWorker({
    bus,
    registry: openRegistry(config, ws, spec.role),
    handler: spec.handler,
    topics: spec.topics.map((t) => prefix + t),
    groupId: prefix + spec.group,
    dlqTopic: prefix + spec.dlq,
    handle: spec.handle,
    ...(spec.handleBatch === undefined ? {} : { handleBatch: spec.handleBatch }),
    ...(spec.transactional ? { transactional: ws.sql } : {}),
    maxAttempts: config.worker.maxAttempts,
    batchSize: config.worker.batchSize,
    concurrency: config.worker.concurrency,
    commitIntervalMs: config.worker.commitIntervalMs,
    heartbeatMs: config.registry.heartbeatIntervalSeconds * 1000,
    loadEnvelope: (id) => ws.eventStore.getByEventId(id),
    logger,
    tracer: ws.tracer,
  })
  metrics?.addSource({
    component: 'worker',
    labels: { handler: spec.handler },
    read: () => worker.metrics(),
  })
  return worker
}

/** The domain's workers of the given roles, not yet running; their topics exist already. */
export const openWorkers = (
  config: CairnConfig,
  ws: WriteSide,
  bus: Bus,
  logger: Logger,
  roles: readonly WorkerRole[],
  metrics?: PrometheusMetrics,
): Worker[] =>
  roles.map((role) => {
    const { handlers, ...spec } = ROLES[role]
    return openWorker(
      config,
      ws,
      bus,
      logger,
      { ...spec, role: `${role}-worker`, ...handlers(ws, config, logger) },
      metrics,
    )
  })

/** The OMS app over the write side (the read model and the registry live in the same database). */
export const openOmsApp = (
  config: CairnConfig,
  ws: WriteSide,
  logger: Logger,
  metrics: PrometheusMetrics,
  ready: () => Promise<ReadyReport>,
  local: {
    readonly publisherRole?: () => string
    readonly consumerLag?: () => Promise<readonly TopicLag[] | 'unknown'>
  } = {},
): OmsApp => {
  const registry = openRegistry(config, ws, 'oms')
  const clock = databaseClock(ws.sql)
  return createOmsApp({
    eventStore: ws.eventStore,
    readModel: ws.sql,
    schema: config.sequencing.schema,
    commandRecords: (id) => registry.status(id),
    operator: {
      registry,
      resetCheckpoint: (ms) => resetCheckpoint(ws.objectStore, ms),
      logger,
      overview: () =>
        pipelineOverview({
          objectStore: ws.objectStore,
          sql: ws.sql,
          schema: config.sequencing.schema,
          nowUs: () => clock.now(),
          ...(local.publisherRole === undefined ? {} : { localPublisherRole: local.publisherRole }),
          ...(local.consumerLag === undefined ? {} : { consumerLag: local.consumerLag }),
        }),
    },
    console: consoleAssets(),
    auth: config.oms.tokens.length > 0 ? { tokens: config.oms.tokens } : 'disabled',
    maxBodyBytes: config.oms.maxBodyBytes,
    maxInFlight: config.oms.maxInFlight,
    ready,
    metrics,
    logger,
    tracer: ws.tracer,
  })
}

/**
 * Readiness of the write side: the registry's database answers and the bucket can be listed
 * (each within 2 s). A process adds its loops' state: a paused worker or a failing publisher.
 */
export const writeSideReady = (ws: WriteSide) => async (): Promise<ReadyReport> => {
  const checks: Record<string, string> = {}
  const probe = async (name: string, fn: () => Promise<unknown>) => {
    try {
      await Promise.race([
        fn(),
        new Promise((_, reject) => setTimeout(() => reject(new Error('timeout')), 2_000).unref()),
      ])
      checks[name] = 'ok'
    } catch (error) {
      checks[name] = `unavailable: ${(error as Error).message.slice(0, 200)}`
    }
  }
  await Promise.all([
    probe('database', () => ws.sql.query('SELECT 1')),
    probe('bucket', () => ws.objectStore.list('checkpoints/', { limit: 1 })),
  ])
  return { ready: Object.values(checks).every((c) => c === 'ok'), checks }
}

/**
 * The publisher of a process, running: woken in-process by this process's commits and, where the
 * database has NOTIFY, by other processes' commits. Returns its loop, what readiness asks of it,
 * and what to close, in the order opened.
 */
export const runPublisher = async (
  config: CairnConfig,
  ws: WriteSide,
  bus: Bus,
  logger: Logger,
  metrics: PrometheusMetrics,
): Promise<{
  readonly loop: { readonly name: string; readonly done: Promise<void> }
  readonly trouble: { readonly name: string; readonly trouble: () => string | null }
  readonly parts: readonly { readonly name: string; close(): Promise<void> }[]
  /** Its role now (active, standby), for the operator's overview. */
  readonly role: () => string
}> => {
  const parts: { name: string; close(): Promise<void> }[] = []
  const publisher = openPublisher(config, ws, bus, logger)
  metrics.addSource({ component: 'publisher', read: () => publisher.metrics() })
  if (ws.sql.listen !== undefined) {
    // Writers in other processes (OMS, workers) announce their commits: publish at once.
    const assembler = createNoticeAssembler()
    const pass = (notices: readonly AssembledNotice[]): void => {
      for (const notice of notices) {
        if (parseSegmentKey(notice.segmentKey) === null) publisher.wake()
        else if (notice.entries === undefined) publisher.noteSegmentKey(notice.segmentKey)
        else publisher.noteCommit({ segmentKey: notice.segmentKey, entries: notice.entries })
      }
    }
    const unlisten = await ws.sql
      .listen(
        commitChannel(config),
        (payload) => pass(assembler.take(decodeCommitNotice(payload))),
        () => {
          // Notices sent while the listener was away are lost: the publisher must not let a
          // later commit overtake one of them. A commit whose parts stopped coming is read.
          logger.warn({}, 'commit listener reconnected; notices meanwhile may be lost')
          pass(assembler.flush())
          publisher.noteGap()
        },
      )
      .catch((error: unknown) => {
        logger.warn({ err: String(error) }, 'commit notifications unavailable; polling only')
        return undefined
      })
    if (unlisten !== undefined) parts.push({ name: 'commit listener', close: unlisten })
  }
  const done = publisher.run()
  parts.push({ name: 'publisher', close: () => publisher.close().then(() => done) })
  return {
    loop: { name: 'publisher', done },
    trouble: {
      name: 'publisher',
      trouble: () => {
        const failing = publisher.failingWith()
        if (failing !== null) return failing
        const clock = publisher.keyClock()
        // It publishes what it hears of, but its checkpoint holds: readiness says so.
        return publisher.metrics().role !== 'active' || clock.trusted
          ? null
          : `not settling: ${clock.reason ?? 'the database clock cannot be read'}`
      },
    },
    parts,
    role: () => publisher.metrics().role,
  }
}

/** A loop's reason it cannot work now (a dependency away), or null: readiness reports it. */
export type Trouble = { readonly name: string; readonly trouble: () => string | null }

/**
 * A process's readiness: 503 while it stops; else the write side's checks, each loop's trouble
 * and whether appends are refused (the bucket holds segments the registry does not know, until
 * it is reconciled).
 */
export const processReadiness = (
  ws: WriteSide,
  troubles: readonly Trouble[],
  running: () => boolean,
): (() => Promise<ReadyReport>) => {
  const wsReady = writeSideReady(ws)
  const all: readonly Trouble[] = [
    ...troubles,
    { name: 'appends', trouble: () => ws.eventStore.appendsRefused()?.message ?? null },
  ]
  return async () => {
    if (!running()) return { ready: false, checks: { process: 'stopping' } }
    const checks: Record<string, string> = { ...(await wsReady()).checks }
    for (const { name, trouble } of all) {
      const why = trouble()
      checks[name] = why === null ? 'ok' : `paused: ${why.slice(0, 200)}`
    }
    return { ready: Object.values(checks).every((c) => c === 'ok'), checks }
  }
}

export type CairnComponents = {
  readonly oms: boolean
  readonly publisher: boolean
  readonly workers: readonly WorkerRole[]
}

export type CairnRuntime = {
  readonly ws: WriteSide
  /** The OMS when it runs here, else the operations endpoints (health, readiness, metrics). */
  readonly app: HttpApp
  /** The long-running loops (publisher, workers); one that rejects has failed. */
  readonly loops: readonly { readonly name: string; readonly done: Promise<void> }[]
  /** Stops the loops at their next safe point and closes everything in reverse order. */
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

/** The process's component for the spans' service name: `oms`, `publisher`, `<role>-worker`, `worker` (several roles), or `all`. */
const componentName = (components: CairnComponents): string => {
  const { oms, publisher, workers } = components
  if (!oms && !publisher) return workers.length === 1 ? `${workers[0] as string}-worker` : 'worker'
  if (workers.length === 0 && oms !== publisher) return oms ? 'oms' : 'publisher'
  return 'all'
}

/**
 * The composition root of a cairn process: the write side, and as asked the publisher, the
 * domain's workers and the OMS. `cairn start` opens all of them in one process; the distributed
 * commands one each. Readiness turns 503 as soon as `running()` is false.
 */
export const openCairn = async (
  config: CairnConfig,
  logger: Logger,
  components: CairnComponents,
  options: {
    readonly metrics?: PrometheusMetrics
    readonly running?: () => boolean
    /** Waits for the services as they come up (default: try once, fail if one is not there). */
    readonly wait?: StartupGate['wait']
  } = {},
): Promise<CairnRuntime> => {
  const metrics = options.metrics ?? createPrometheusMetrics()
  const running = options.running ?? (() => true)
  const wait = options.wait ?? noWait
  const parts: { name: string; close(): Promise<void> }[] = []
  const loops: { name: string; done: Promise<void> }[] = []
  /** Why each loop cannot work now (a dependency away), or null: readiness reports it. */
  const troubles: Trouble[] = []
  let publisherRole: (() => string) | undefined
  const close = () => closeAll(parts, logger)
  try {
    // Opened first, closed last: what the others' closing records is exported too.
    const tracing = openTracer(config, componentName(components), logger)
    parts.push({ name: 'tracer', close: () => tracing.close() })
    const ws = await openWriteSide(config, logger, { wait, tracer: tracing.tracer })
    parts.push({ name: 'write side', close: () => ws.close() })
    let bus: Bus | undefined
    if (components.publisher || components.workers.length > 0) {
      const opened = openBus(config, logger)
      parts.push({ name: 'bus', close: () => opened.close() })
      bus = opened
      // Kafka answers and the domain's topics exist before the publisher or a worker starts.
      await wait(`the bus (${opened.describe})`, () => ensureDomainTopics(config, opened))
    }
    if (components.publisher && bus !== undefined) {
      const running = await runPublisher(config, ws, bus, logger, metrics)
      loops.push(running.loop)
      troubles.push(running.trouble)
      parts.push(...running.parts)
      publisherRole = running.role
    }
    if (components.workers.length > 0 && bus !== undefined) {
      const workers = openWorkers(config, ws, bus, logger, components.workers, metrics)
      workers.forEach((w, i) => {
        const done = w.run()
        const name = `${components.workers[i] ?? 'unknown'} worker`
        loops.push({ name, done })
        troubles.push({ name, trouble: () => w.pausedBy() })
        parts.push({ name, close: () => w.close().then(() => done) })
      })
    }
    if (components.oms && bus === undefined && config.mode === 'distributed') {
      // The OMS alone asks Kafka for the consumer groups' lag (the overview); its clients are
      // made on the first request.
      const opened = openBus(config, logger)
      parts.push({ name: 'bus (consumer lag)', close: () => opened.close() })
      bus = opened
    }
    const ready = processReadiness(ws, troubles, running)
    const app = components.oms
      ? openOmsApp(config, ws, logger, metrics, ready, {
          ...(publisherRole === undefined ? {} : { publisherRole }),
          ...(bus === undefined ? {} : { consumerLag: domainConsumerLag(config, bus) }),
        })
      : createOpsApp({ ready, metrics })
    return { ws, app, loops, close, [Symbol.asyncDispose]: close }
  } catch (error) {
    await close()
    throw error
  }
}
