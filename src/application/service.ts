import type { Static } from 'typebox'
import { createPrometheusMetrics } from '../adapters/metrics/prometheus.ts'
import type { PrometheusMetrics } from '../adapters/metrics/prometheus.ts'
import { closeAll, openBus, openWriteSide } from '../config/compose.ts'
import type { WriteSide } from '../config/compose.ts'
import type { CairnConfig } from '../config/env.ts'
import { openRegistry, openWorker, processReadiness, runPublisher } from '../config/runtime.ts'
import type { CairnRuntime, Trouble } from '../config/runtime.ts'
import { noWait } from '../config/startup.ts'
import { openTracer } from '../config/tracing.ts'
import type { StartupGate } from '../config/startup.ts'
import { randomUUID } from 'node:crypto'
import { CairnError, ErrorCode } from '../core/errors.ts'
import type { Bus } from '../core/ports/bus.ts'
import type { Sql } from '../core/ports/sql.ts'
import { silentLogger } from '../core/ports/logger.ts'
import type { Logger } from '../core/ports/logger.ts'
import type { HttpApp } from '../http/app.ts'
import { createOpsApp } from '../http/ops.ts'
import type { Handle, HandleBatch } from '../worker/worker.ts'
import { createCommandProcessor, decideInline } from './command-processor.ts'
import type { CommandProcessor, LoadedState } from './command-processor.ts'
import { commandEnvelope, problemsOf } from './decider.ts'
import type { CommandResult } from './decider.ts'
import type { SomeAggregate, SomeCommand, DomainDefinition, StateOf } from './define.ts'
import { createDomainApp } from './http.ts'
import {
  createProcessManagerHandler,
  createProjectionHandlers,
  handlerNames,
  projectionContext,
  setupProjection,
  topicsOf,
} from './reactions.ts'
import { createSnapshotStore } from './snapshots.ts'

/**
 * Running a declared domain: the write side, the publisher, the domain's workers (its command
 * worker, one per process manager and one per projection) and its HTTP API, in one process
 * (embedded, `cairn`'s defaults) or split across processes (distributed: each process opens the
 * components it is asked for). Built from the same parts as cairn's own runtime.
 */

/** Where commands are decided: by the command worker (the seed's flow), or in the OMS at once. */
export type DecideMode = 'worker' | 'inline'

export type ServiceComponents = {
  readonly oms: boolean
  readonly publisher: boolean
  /** The domain's workers: commands, process managers, projections. */
  readonly workers: boolean
}

export type ServiceOptions = {
  readonly domain: DomainDefinition
  readonly config: CairnConfig
  readonly logger?: Logger
  readonly components?: ServiceComponents
  /** Default `worker`. `inline`: the OMS decides a command it stored and answers its outcome. */
  readonly decide?: DecideMode
  readonly metrics?: PrometheusMetrics
  readonly running?: () => boolean
  readonly wait?: StartupGate['wait']
  /** A database the caller opened and closes (default: the config's). */
  readonly sql?: Sql
}

export type SendOptions = {
  /** The command's id (default: a new UUID); the same id sends it once (W3). */
  readonly commandId?: string
  /** The aggregate's sequence the sender expects (W5); omitted: any. */
  readonly expectedSeq?: number
  readonly actor?: string | null
  readonly correlationId?: string
}

export type Sent = {
  readonly commandId: string
  readonly outcome: 'appended' | 'duplicate'
  readonly aggregateId: string
  readonly sequence: number
}

export type DomainService = CairnRuntime & {
  readonly domain: DomainDefinition
  readonly processor: CommandProcessor
  /** Stores a command (as the OMS does for a request); the command worker decides it. */
  send<C extends SomeCommand>(
    command: C,
    payload: Static<C['schema']>,
    options?: SendOptions,
  ): Promise<Sent>
  /** The registry's record of a command: null while no worker finished it. */
  outcome(commandId: string): Promise<CommandResult | null>
  /** An aggregate's current state (snapshot plus the events after it). */
  load<A extends SomeAggregate>(
    aggregate: A,
    aggregateId: string,
  ): Promise<LoadedState & { readonly state: StateOf<A> }>
  /** Runs a declared query as its route would. */
  query(name: string, input: Record<string, unknown>): Promise<unknown>
}

const topicName = (s: string): string => s.replace(/[^A-Za-z0-9._-]/g, '.')

type DomainWorker = {
  readonly role: string
  readonly handler: string
  readonly topics: readonly string[]
  readonly handle: Handle
  readonly handleBatch?: HandleBatch
  readonly transactional: boolean
}

/** The workers of a domain, as specs (their handler names double as consumer groups). */
const workerSpecs = (
  domain: DomainDefinition,
  ws: WriteSide,
  schema: string,
  processor: CommandProcessor,
): DomainWorker[] => {
  const names = handlerNames(domain)
  const specs: DomainWorker[] = []
  if (domain.commands.length > 0) {
    specs.push({
      role: 'commands',
      handler: names.commands,
      topics: [...new Set(domain.commands.map((c) => c.aggregate.topics.commands))],
      handle: processor.handle,
      transactional: false,
    })
  }
  for (const pm of domain.processManagers) {
    specs.push({
      role: `process:${pm.name}`,
      handler: names.processManager(pm.name),
      topics: topicsOf(domain, pm.events),
      handle: createProcessManagerHandler({
        domain,
        processManager: pm,
        eventStore: ws.eventStore,
      }),
      transactional: false,
    })
  }
  for (const projection of domain.projections) {
    const { handle, handleBatch } = createProjectionHandlers({ domain, projection, schema })
    specs.push({
      role: `projection:${projection.name}`,
      handler: names.projection(projection.name),
      topics: topicsOf(domain, projection.events),
      handle,
      handleBatch,
      transactional: true,
    })
  }
  return specs
}

/** Every topic a domain uses (commands, events, dead letters), to create before anything runs. */
export const domainTopicNames = (domain: DomainDefinition): string[] => [
  ...new Set([
    ...domain.aggregates.flatMap((a) => [a.topics.commands, a.topics.events]),
    `${domain.name}.commands.dlq`,
    ...domain.processManagers.map((p) => topicName(`${domain.name}.process.${p.name}.dlq`)),
    ...domain.projections.map((p) => topicName(`${domain.name}.projection.${p.name}.dlq`)),
  ]),
]

const dlqOf = (domain: DomainDefinition, role: string): string =>
  topicName(`${domain.name}.${role.replace(':', '.')}.dlq`)

/** Opens a domain's components as asked. Close it (or dispose it) to stop them in reverse order. */
export const openService = async (options: ServiceOptions): Promise<DomainService> => {
  const { domain, config } = options
  const logger = options.logger ?? silentLogger
  const components = options.components ?? { oms: true, publisher: true, workers: true }
  const metrics = options.metrics ?? createPrometheusMetrics()
  const running = options.running ?? (() => true)
  const wait = options.wait ?? noWait
  const schema = config.sequencing.schema
  const prefix = config.publisher.topicPrefix
  const parts: { name: string; close(): Promise<void> }[] = []
  const loops: { name: string; done: Promise<void> }[] = []
  const troubles: Trouble[] = []
  const close = () => closeAll(parts, logger)
  try {
    // Opened first, closed last: what the others' closing records is exported too.
    const tracing = openTracer(config, domain.name, logger)
    parts.push({ name: 'tracer', close: () => tracing.close() })
    const ws = await openWriteSide(config, logger, {
      wait,
      tracer: tracing.tracer,
      ...(options.sql === undefined ? {} : { sql: options.sql }),
    })
    parts.push({ name: 'write side', close: () => ws.close() })
    for (const projection of domain.projections) await setupProjection(ws.sql, projection, schema)
    const snapshots = createSnapshotStore(ws.sql, schema)
    const processor = createCommandProcessor({
      domain,
      eventStore: ws.eventStore,
      snapshots,
      logger,
    })
    let bus: Bus | undefined
    if (components.publisher || components.workers) {
      const opened = openBus(config, logger)
      parts.push({ name: 'bus', close: () => opened.close() })
      bus = opened
      await wait(`the bus (${opened.describe})`, () =>
        opened.ensureTopics(
          domainTopicNames(domain).map((t) => ({
            name: prefix + t,
            partitions: config.publisher.topicPartitions,
          })),
        ),
      )
    }
    if (components.publisher && bus !== undefined) {
      const publisher = await runPublisher(config, ws, bus, logger, metrics)
      loops.push(publisher.loop)
      troubles.push(publisher.trouble)
      parts.push(...publisher.parts)
    }
    if (components.workers && bus !== undefined) {
      for (const spec of workerSpecs(domain, ws, schema, processor)) {
        const worker = openWorker(
          config,
          ws,
          bus,
          logger,
          {
            ...spec,
            role: `${domain.name}-${spec.role}`,
            group: topicName(spec.handler),
            dlq: dlqOf(domain, spec.role),
          },
          metrics,
        )
        const done = worker.run()
        const name = `${spec.role} worker`
        loops.push({ name, done })
        troubles.push({ name, trouble: () => worker.pausedBy() })
        parts.push({ name, close: () => worker.close().then(() => done) })
      }
    }
    const ready = processReadiness(ws, troubles, running)

    // The OMS's registry: command status, and the claims of inline decisions (kept alive, so
    // that a crashed OMS's claims are taken over as fast as a worker's, C2).
    const registry = openRegistry(config, ws, `${domain.name}-oms`)
    const inline = options.decide === 'inline' && components.oms
    if (inline) {
      await registry.start()
      const beat = setInterval(
        () => void registry.touch().catch(() => undefined),
        config.registry.heartbeatIntervalSeconds * 1000,
      )
      beat.unref()
      parts.push({
        name: 'oms registry',
        close: async () => {
          clearInterval(beat)
          await registry.stop().catch(() => undefined)
        },
      })
    }
    const decideNow = inline
      ? (stored: Parameters<typeof decideInline>[3]) =>
          decideInline(processor, registry, handlerNames(domain).commands, stored, logger)
      : undefined

    const runQuery = async (name: string, input: Record<string, unknown>): Promise<unknown> => {
      const q = domain.queries.find((x) => x.name === name)
      if (q === undefined) throw new CairnError(ErrorCode.INVALID_CONFIG, `no query ${name}`)
      const problems = problemsOf(q.schema, input)
      if (problems.length > 0) {
        throw new CairnError(
          ErrorCode.INVALID_ENVELOPE,
          `query ${name}: ${problems.map((p) => `${p.pointer} ${p.message}`).join('; ')}`,
        )
      }
      const ctx = projectionContext(ws.sql, schema)
      return q.run(input as never, { sql: ws.sql, schema, table: ctx.table })
    }

    const app: HttpApp = components.oms
      ? createDomainApp({
          domain,
          eventStore: ws.eventStore,
          sql: ws.sql,
          schema,
          commandRecords: (id) => registry.status(id),
          auth: config.oms.tokens.length > 0 ? { tokens: config.oms.tokens } : 'disabled',
          maxBodyBytes: config.oms.maxBodyBytes,
          maxInFlight: config.oms.maxInFlight,
          ready,
          metrics,
          logger,
          tracer: ws.tracer,
          ...(decideNow === undefined ? {} : { decideNow }),
        })
      : createOpsApp({ ready, metrics })

    const send: DomainService['send'] = async (command, payload, opts = {}) => {
      const problems = problemsOf(command.schema, payload)
      if (problems.length > 0) {
        throw new CairnError(
          ErrorCode.INVALID_ENVELOPE,
          `${command.type}: ${problems.map((p) => `${p.pointer} ${p.message}`).join('; ')}`,
        )
      }
      if (opts.expectedSeq === undefined && command.expect === 'required') {
        throw new CairnError(
          ErrorCode.INVALID_ENVELOPE,
          `${command.type} needs expectedSeq (the aggregate's sequence the sender read)`,
        )
      }
      const commandId = opts.commandId ?? randomUUID()
      const expectedSeq = opts.expectedSeq ?? (command.expect === 'new' ? 0 : null)
      const result = await ws.eventStore.append({
        envelopes: [
          commandEnvelope(command, payload, {
            commandId,
            expectedSeq,
            actor: opts.actor ?? null,
            correlationId: opts.correlationId ?? commandId,
            service: 'application',
          }),
        ],
        expectedSeq,
      })
      const stored = result.envelopes[0]
      if (stored === undefined) throw new CairnError(ErrorCode.APPEND_FAILED, 'nothing stored')
      return {
        commandId,
        outcome: result.outcome,
        aggregateId: stored.aggregate_id,
        sequence: stored.sequence_number,
      }
    }

    return {
      ws,
      app,
      loops,
      close,
      [Symbol.asyncDispose]: close,
      domain,
      processor,
      send,
      async outcome(commandId) {
        const row = (await registry.status(commandId)).find(
          (r) => r.handler === handlerNames(domain).commands && r.status === 'done',
        )
        return (row?.result ?? null) as CommandResult | null
      },
      load: (aggregate, id) => processor.load(aggregate, id) as never,
      query: runQuery,
    }
  } catch (error) {
    await close()
    throw error
  }
}
