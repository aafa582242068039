import {
  Admin,
  Consumer,
  findErrorBy,
  IS_CONTROL,
  ListOffsetTimestamps,
  NetworkError,
  Producer,
  ProduceAcks,
  stringSerializer,
} from '@platformatic/kafka'
import { CairnError, ErrorCode } from '../../core/errors.ts'
import { DEFAULT_MAX_BATCH, murmur2 } from '../../core/ports/bus.ts'
import type {
  Bus,
  BusConsumer,
  BusMessage,
  BusProducer,
  ConsumerOptions,
  DeliveredMessage,
  TopicLag,
  TopicSpec,
} from '../../core/ports/bus.ts'
import { silentLogger } from '../../core/ports/logger.ts'
import type { Logger } from '../../core/ports/logger.ts'

export type KafkaBusOptions = {
  /** Bootstrap brokers, `host:port`. */
  readonly brokers: readonly string[]
  /** Prefix of the client ids this bus gives its producers and consumers (default `cairn`). */
  readonly clientId?: string
  readonly logger?: Logger
  /** Replication factor of the topics `ensureTopics` creates (default 1). */
  readonly replicationFactor?: number
  /** A member that misses heartbeats this long leaves its group (default 10 000 ms). */
  readonly sessionTimeoutMs?: number
  /** Heartbeat period; a rebalance is noticed within it (default 1 000 ms). */
  readonly heartbeatIntervalMs?: number
  /** How long a rebalance waits for members to rejoin (default 30 000 ms). */
  readonly rebalanceTimeoutMs?: number
  /**
   * Longest a fetch waits at the broker while there is nothing new (default 500 ms, the Java
   * client's `fetch.max.wait.ms`); a new message ends it at once. Shorter costs an idle consumer
   * more fetches: 200 ms took 8–9 ms of CPU a second in the consumer, 500 ms 3 ms.
   */
  readonly fetchWaitMs?: number
  /** Retries of a failing request inside the client before an operation rejects (default 3). */
  readonly retries?: number
  /** Delay between those retries (default 250 ms). */
  readonly retryDelayMs?: number
  /**
   * Timeout of one request to a broker (default 5 000 ms): the broker's own bound (a produce's
   * wait for replicas), and, with a 2 s grace, how long the client waits for an answer before it
   * drops the connection and retries. A consumer waits up to the rebalance timeout instead (a
   * join blocks at the broker until the group rebalances); its fetches, which the broker answers
   * within the fetch wait, count as failed after this timeout (a broker that hangs).
   */
  readonly requestTimeoutMs?: number
}

export type KafkaBus = Bus & { readonly brokers: readonly string[] }

const PARTITION_MAX_BYTES = 1_048_576
const FETCH_MAX_BYTES = 16 * 1_048_576
const TOPIC_READY_TIMEOUT_MS = 10_000
/** How much longer than the request timeout the client waits for a broker's answer. */
const REQUEST_GRACE_MS = 2_000

// The few members of @platformatic/kafka's clients cairn uses (so swapping the client is local).

type PartitionMetadata = { readonly leader: number }
type TopicMetadata = {
  readonly id: string
  readonly partitionsCount: number
  readonly partitions: readonly PartitionMetadata[]
}
type Metadata = { readonly topics: ReadonlyMap<string, TopicMetadata> }

type KafkaRecord = {
  readonly offsetDelta: number
  readonly key: Buffer | null
  readonly value: Buffer | null
  readonly headers: readonly (readonly [Buffer | null, Buffer | null])[]
}
type RecordsBatch = {
  readonly firstOffset: bigint
  readonly lastOffsetDelta: number
  readonly attributes: number
  readonly records: readonly KafkaRecord[]
}
type FetchResponse = {
  readonly responses: readonly {
    readonly topicId: string
    readonly partitions: readonly {
      readonly partitionIndex: number
      readonly records?: readonly RecordsBatch[] | null
    }[]
  }[]
}
type FetchPartition = {
  partition: number
  fetchOffset: bigint
  partitionMaxBytes: number
  currentLeaderEpoch: number
  lastFetchedEpoch: number
}
type Assignment = { readonly topic: string; readonly partitions: readonly number[] }
type CommitOffset = { topic: string; partition: number; offset: bigint; leaderEpoch: number }

type ProducerClient = {
  send(options: {
    messages: { topic: string; key: string; value: Buffer; headers: Record<string, string> }[]
  }): Promise<unknown>
  close(): Promise<void>
}

type ConsumerClient = {
  readonly assignments: readonly Assignment[] | null
  readonly topics: { trackAll(...topics: string[]): unknown }
  metadata(options: { topics: string[]; forceUpdate?: boolean }): Promise<Metadata>
  joinGroup(options: Record<string, never>): Promise<string>
  fetch(options: {
    node: number
    topics: { topicId: string; partitions: FetchPartition[] }[]
    maxWaitTime: number
    minBytes: number
    maxBytes: number
  }): Promise<FetchResponse>
  listOffsets(options: {
    topics: string[]
    partitions: Record<string, number[]>
    timestamp: bigint
  }): Promise<Map<string, bigint[]>>
  listCommittedOffsets(options: {
    topics: { topic: string; partitions: number[] }[]
  }): Promise<Map<string, bigint[]>>
  commit(options: { offsets: CommitOffset[] }): Promise<void>
  on(event: 'consumer:group:join', listener: () => void): unknown
  on(event: 'error', listener: (error: Error) => void): unknown
  removeListener(event: 'consumer:group:join', listener: () => void): unknown
  close(): Promise<void>
}

type AdminClient = {
  listTopics(): Promise<string[]>
  createTopics(options: {
    topics: { topic: string; partitions: number; replicas: number }[]
  }): Promise<unknown>
  metadata(options: { topics: string[]; forceUpdate?: boolean }): Promise<Metadata>
  listOffsets(options: {
    topics: { name: string; partitions: { partitionIndex: number; timestamp: bigint }[] }[]
  }): Promise<{ name: string; partitions: { partitionIndex: number; offset: bigint }[] }[]>
  listConsumerGroupOffsets(options: { groups: string[] }): Promise<
    {
      groupId: string
      topics: { name: string; partitions: { partitionIndex: number; committedOffset: bigint }[] }[]
    }[]
  >
  close(): Promise<void>
}

/** ListOffsets' timestamps that ask for the log's end and for its start. */
const LATEST = -1n
const EARLIEST = -2n

const positiveInt = (name: string, value: number): number => {
  if (!Number.isInteger(value) || value < 1) {
    throw new CairnError(ErrorCode.INVALID_CONFIG, `${name} must be a positive integer`, {
      details: { [name]: value },
    })
  }
  return value
}

const isUnknownTopic = (error: Error): boolean =>
  findErrorBy(error, 'apiId', 'UNKNOWN_TOPIC_OR_PARTITION') !== null ||
  // How the client reports a topic missing from the cluster's metadata.
  (findErrorBy(error, 'code', 'PLT_KFK_USER')?.message.startsWith('Unknown topic ') ?? false)

/**
 * Maps an error of the client to the one error family: `BUS_UNKNOWN_TOPIC` for a missing topic,
 * `BUS_UNAVAILABLE` (retryable) when the cluster could not be reached or answered a retryable
 * error, `BUS_ERROR` otherwise.
 */
const toCairnError = (error: unknown, what: string): CairnError => {
  if (error instanceof CairnError) return error
  if (!(error instanceof Error)) {
    return new CairnError(ErrorCode.BUS_ERROR, `${what} failed: ${String(error)}`, {
      cause: error,
    })
  }
  if (isUnknownTopic(error)) {
    return new CairnError(ErrorCode.BUS_UNKNOWN_TOPIC, `${what} failed: ${error.message}`, {
      cause: error,
    })
  }
  const unavailable =
    NetworkError.isRetryable(error) ||
    findErrorBy(error, 'code', 'PLT_KFK_NETWORK') !== null ||
    findErrorBy(error, 'code', 'PLT_KFK_TIMEOUT') !== null
  const retryable = unavailable || findErrorBy(error, 'canRetry', true) !== null
  // The broker's own error names say more than the client's message (which repeats per try).
  const ids = kafkaErrorIds(error)
  return new CairnError(
    unavailable ? ErrorCode.BUS_UNAVAILABLE : ErrorCode.BUS_ERROR,
    `${what} failed: ${error.message}${ids.length > 0 ? ` (${ids.join(', ')})` : ''}`,
    { retryable, cause: error },
  )
}

/**
 * True when a failed CreateTopics failed only because the topics exist (every error it carries is
 * TOPIC_ALREADY_EXISTS): another process created them first.
 */
const onlyAlreadyExists = (error: unknown): boolean => {
  const leaves: unknown[] = []
  const walk = (e: unknown): void => {
    if (e instanceof AggregateError) for (const inner of e.errors) walk(inner)
    else leaves.push(e)
  }
  walk(error)
  return (
    leaves.length > 0 &&
    leaves.every(
      (e) => e instanceof Error && findErrorBy(e, 'apiId', 'TOPIC_ALREADY_EXISTS') !== null,
    )
  )
}

/** The broker's errors in a failure of the Kafka client: name (`apiId`) and whether it is transient. */
const brokerErrors = (error: unknown): { readonly id: string; readonly canRetry: boolean }[] => {
  const out: { id: string; canRetry: boolean }[] = []
  const walk = (e: unknown, depth: number): void => {
    if (depth > 8 || !(e instanceof Error)) return
    const { apiId, canRetry } = e as { apiId?: unknown; canRetry?: unknown }
    if (typeof apiId === 'string') out.push({ id: apiId, canRetry: canRetry === true })
    if (e instanceof AggregateError) for (const inner of e.errors) walk(inner, depth + 1)
  }
  walk(error, 0)
  return out
}

/** The broker's error names in a failure of the Kafka client, e.g. NOT_COORDINATOR. */
export const kafkaErrorIds = (error: unknown): string[] => [
  ...new Set(brokerErrors(error).map((e) => e.id)),
]

/**
 * The broker answered, with errors it calls transient only (a group coordinator still loading
 * after a fresh cluster's first group or a restart, a rebalance): worth trying again soon.
 */
export const isBrokerTransient = (error: unknown): boolean => {
  const errors = brokerErrors(error)
  return errors.length > 0 && errors.every((e) => e.canRetry)
}

/** How long joining a group at a consumer's creation waits out transient refusals. */
const COORDINATOR_WAIT_MS = 15_000

const partitionId = (topic: string, partition: number): string => `${partition}:${topic}`

const bufferOf = (bytes: Uint8Array): Buffer =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)

const groupByTopic = (owned: readonly Assignment[]): Record<string, number[]> =>
  Object.fromEntries(owned.map((a) => [a.topic, [...a.partitions]]))

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * The bus on Apache Kafka, through @platformatic/kafka. Producers are idempotent with acks=all;
 * one `send` is one produce request per partition leader. Consumers are members of a classic
 * consumer group (round-robin assignment) that fetch themselves and commit explicitly, so that
 * `poll` hands out exactly the messages whose offsets the consumer tracks, and a rebalance
 * restarts every owned partition from the group's committed offset.
 */
export const createKafkaBus = (options: KafkaBusOptions): KafkaBus => {
  if (options.brokers.length === 0) {
    throw new CairnError(ErrorCode.INVALID_CONFIG, 'the Kafka bus needs at least one broker')
  }
  const config = Object.freeze({
    brokers: Object.freeze([...options.brokers]),
    clientId: options.clientId ?? 'cairn',
    replicationFactor: positiveInt('replicationFactor', options.replicationFactor ?? 1),
    sessionTimeout: positiveInt('sessionTimeoutMs', options.sessionTimeoutMs ?? 10_000),
    heartbeatInterval: positiveInt('heartbeatIntervalMs', options.heartbeatIntervalMs ?? 1_000),
    rebalanceTimeout: positiveInt('rebalanceTimeoutMs', options.rebalanceTimeoutMs ?? 30_000),
    fetchWait: positiveInt('fetchWaitMs', options.fetchWaitMs ?? 500),
    retries: positiveInt('retries', options.retries ?? 3),
    retryDelay: positiveInt('retryDelayMs', options.retryDelayMs ?? 250),
    timeout: positiveInt('requestTimeoutMs', options.requestTimeoutMs ?? 5_000),
  })
  const logger = (options.logger ?? silentLogger).child({ component: 'kafka-bus' })
  const describe = `kafka://${config.brokers.join(',')}`
  const base = {
    bootstrapBrokers: [...config.brokers],
    retries: config.retries,
    retryDelay: config.retryDelay,
    timeout: config.timeout,
    // The client-side wait for an answer (the client's own default is 30 s per try).
    requestTimeout: config.timeout + REQUEST_GRACE_MS,
  }
  /**
   * The calls' outcomes, or a retryable BUS_UNAVAILABLE when a broker has not answered within a
   * request's time (a consumer's client waits up to the rebalance timeout per try, for joins; a
   * commit or an offset look-up must not wait that long on a broker that hangs). An abandoned
   * call ends by itself; a commit that lands late only moves the offset to where it was meant.
   */
  const answered = <const T extends readonly Promise<unknown>[]>(
    what: string,
    calls: T,
  ): Promise<{ -readonly [K in keyof T]: Awaited<T[K]> }> => {
    const ms = config.timeout + REQUEST_GRACE_MS
    let timer: ReturnType<typeof setTimeout> | undefined
    const all = Promise.all(calls)
    all.catch(() => {})
    return Promise.race([
      all,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new CairnError(ErrorCode.BUS_UNAVAILABLE, `${what}: no answer within ${ms} ms`, {
                retryable: true,
              }),
            ),
          ms,
        )
      }),
    ]).finally(() => clearTimeout(timer))
  }
  const resources = new Set<{ close(): Promise<void> }>()
  let admin: AdminClient | undefined
  let clientSeq = 0
  let closed = false

  const clientIdFor = (role: string, requested: string | undefined): string =>
    requested ?? `${config.clientId}-${role}-${process.pid}-${clientSeq++}`

  const assertOpen = (): void => {
    if (closed) throw new CairnError(ErrorCode.CLOSED, `${describe} is closed`)
  }

  const adminClient = (): AdminClient => {
    admin ??= new Admin({ ...base, clientId: clientIdFor('admin', undefined) })
    return admin
  }

  /** Waits until the cluster's metadata shows every partition of the topics with a leader. */
  const awaitLeaders = async (specs: readonly TopicSpec[]): Promise<void> => {
    const deadline = Date.now() + TOPIC_READY_TIMEOUT_MS
    for (;;) {
      let lastError: unknown
      try {
        const metadata = await adminClient().metadata({
          topics: specs.map((s) => s.name),
          forceUpdate: true,
        })
        const ready = specs.every((s) => {
          const topic = metadata.topics.get(s.name)
          return (
            topic !== undefined &&
            topic.partitions.length === topic.partitionsCount &&
            topic.partitions.every((p) => p.leader >= 0)
          )
        })
        if (ready) return
      } catch (error) {
        lastError = error
      }
      if (Date.now() > deadline) {
        const error =
          lastError === undefined ? undefined : toCairnError(lastError, 'waiting for new topics')
        // A cluster still starting or electing leaders, or a broker whose metadata still lags
        // behind a creation: worth waiting for, not a fault.
        throw error === undefined || error.retryable || error.code === ErrorCode.BUS_UNKNOWN_TOPIC
          ? new CairnError(
              ErrorCode.BUS_UNAVAILABLE,
              `topics ${specs.map((s) => s.name).join(', ')} on ${describe} are not ready after ${TOPIC_READY_TIMEOUT_MS} ms` +
                (error === undefined
                  ? ' (not every partition shows a leader yet)'
                  : `: ${error.message}`),
              { retryable: true, ...(error === undefined ? {} : { cause: error }) },
            )
          : error
      }
      await sleep(100)
    }
  }

  const producer = (producerOptions: { readonly clientId?: string } = {}): BusProducer => {
    assertOpen()
    const client: ProducerClient = new Producer({
      ...base,
      clientId: clientIdFor('producer', producerOptions.clientId),
      idempotent: true,
      acks: ProduceAcks.ALL,
      serializers: {
        key: stringSerializer,
        headerKey: stringSerializer,
        headerValue: stringSerializer,
      },
      // Java's default partitioner; the client then takes it modulo the partition count.
      partitioner: (_message, key) => (key === undefined ? 0 : murmur2(key) & 0x7fffffff),
    })
    let closing: Promise<void> | undefined
    const self: BusProducer = {
      async send(messages: readonly BusMessage[]): Promise<void> {
        if (closing !== undefined) throw new CairnError(ErrorCode.CLOSED, 'producer is closed')
        if (messages.length === 0) return
        try {
          await client.send({
            messages: messages.map((m) => ({
              topic: m.topic,
              key: m.key,
              value: bufferOf(m.value),
              headers: { ...m.headers },
            })),
          })
        } catch (error) {
          throw toCairnError(error, `sending ${messages.length} message(s) to ${describe}`)
        }
      },
      close(): Promise<void> {
        closing ??= (async () => {
          resources.delete(self)
          await client.close().catch((error: unknown) => {
            logger.warn({ err: error }, 'closing a Kafka producer failed')
          })
        })()
        return closing
      },
      [Symbol.asyncDispose]: () => self.close(),
    }
    resources.add(self)
    return self
  }

  const consumer = async (consumerOptions: ConsumerOptions): Promise<BusConsumer> => {
    assertOpen()
    const topics = [...new Set(consumerOptions.topics)]
    if (topics.length === 0) {
      throw new CairnError(ErrorCode.BUS_ERROR, 'a consumer needs at least one topic')
    }
    const maxBatch = positiveInt('maxBatch', consumerOptions.maxBatch ?? DEFAULT_MAX_BATCH)
    const start = consumerOptions.start ?? 'earliest'
    const groupId = consumerOptions.groupId
    const log = logger.child({ groupId })
    const client: ConsumerClient = new Consumer({
      ...base,
      requestTimeout: Math.max(config.timeout, config.rebalanceTimeout) + REQUEST_GRACE_MS,
      clientId: clientIdFor('consumer', consumerOptions.clientId),
      groupId,
      autocommit: false,
      sessionTimeout: config.sessionTimeout,
      heartbeatInterval: config.heartbeatInterval,
      rebalanceTimeout: config.rebalanceTimeout,
      maxWaitTime: config.fetchWait,
    })

    // Every (re)join bumps the epoch: positions, buffered messages and in-flight fetches of an
    // older epoch are dropped, and positions restart from the committed offsets.
    let epoch = 0
    let owned: readonly Assignment[] = []
    let positions = new Map<string, bigint>()
    let positionsEpoch = -1
    let buffer: DeliveredMessage[] = []
    let bufferEpoch = -1
    /** Highest offset this member committed or started from, per partition. */
    const floor = new Map<string, bigint>()
    type Fetched = {
      readonly epoch: number
      readonly responses: readonly FetchResponse[]
      /** The metadata the fetch was addressed with: maps topic ids back to names. */
      readonly metadata: Metadata
    }
    type FetchOutcome = Fetched | { readonly epoch: number; readonly error: unknown }
    let inflight: Promise<FetchOutcome> | undefined
    /** When the fetch in flight was sent. */
    let inflightSince = 0
    const wakers = new Set<() => void>()
    const wakeAll = (): void => {
      for (const wake of [...wakers]) wake()
    }
    let polling = false
    let closing: Promise<void> | undefined

    const onJoin = (): void => {
      epoch++
      owned = (client.assignments ?? []).filter((a) => topics.includes(a.topic))
      buffer = []
      log.debug({ epoch, owned }, 'consumer group (re)joined')
      wakeAll()
    }

    // The client reports a failed rejoin (the cluster was unreachable for longer than its
    // retries) as an 'error' event and stops heartbeating: the member owns nothing until the
    // next poll joins again. Without a listener the event would crash the process.
    let membershipLost = false
    const lostMembership = (): void => {
      membershipLost = true
      epoch++
      owned = []
      buffer = []
      wakeAll()
    }
    const onError = (error: Error): void => {
      // Closing: the client's errors while it leaves the group are expected, and nothing is lost.
      if (closing !== undefined) return
      log.warn({ err: error }, 'lost the consumer group membership; rejoining at the next poll')
      lostMembership()
    }

    const ensurePositions = async (): Promise<void> => {
      while (positionsEpoch !== epoch) {
        const at = epoch
        const assigned = owned
        const fresh = new Map<string, bigint>()
        if (assigned.length > 0) {
          const partitions = groupByTopic(assigned)
          const names = Object.keys(partitions)
          const [committed, earliest, latest] = await answered('reading the group offsets', [
            client.listCommittedOffsets({
              topics: assigned.map((a) => ({ topic: a.topic, partitions: [...a.partitions] })),
            }),
            client.listOffsets({
              topics: names,
              partitions,
              timestamp: ListOffsetTimestamps.EARLIEST,
            }),
            client.listOffsets({
              topics: names,
              partitions,
              timestamp: ListOffsetTimestamps.LATEST,
            }),
          ] as const)
          for (const { topic, partitions: list } of assigned) {
            for (const partition of list) {
              const id = partitionId(topic, partition)
              const done = committed.get(topic)?.[partition] ?? -1n
              const low = earliest.get(topic)?.[partition] ?? 0n
              const high = latest.get(topic)?.[partition] ?? 0n
              // Like Kafka's auto.offset.reset: an offset out of the log's range (retention,
              // a recreated topic) falls back to the start option.
              const position =
                done >= low && done <= high ? done : start === 'earliest' ? low : high
              fresh.set(id, position)
              if (done >= 0n && done > (floor.get(id) ?? -1n)) floor.set(id, done)
            }
          }
        }
        if (at === epoch) {
          positions = fresh
          positionsEpoch = at
        }
      }
    }

    const startFetch = (waitMs: number): Promise<FetchOutcome> => {
      const at = epoch
      const run = async (): Promise<FetchOutcome> => {
        const metadata = await client.metadata({ topics })
        const byNode = new Map<number, Map<string, FetchPartition[]>>()
        for (const [id, fetchOffset] of positions) {
          const colon = id.indexOf(':')
          const partition = Number(id.slice(0, colon))
          const topic = metadata.topics.get(id.slice(colon + 1))
          const leader = topic?.partitions[partition]?.leader
          if (topic === undefined || leader === undefined) continue
          const node = byNode.get(leader) ?? new Map<string, FetchPartition[]>()
          byNode.set(leader, node)
          const list = node.get(topic.id) ?? []
          node.set(topic.id, list)
          list.push({
            partition,
            fetchOffset,
            partitionMaxBytes: PARTITION_MAX_BYTES,
            currentLeaderEpoch: -1,
            lastFetchedEpoch: -1,
          })
        }
        const responses = await Promise.all(
          [...byNode].map(([node, byTopic]) =>
            client.fetch({
              node,
              topics: [...byTopic].map(([topicId, partitions]) => ({ topicId, partitions })),
              maxWaitTime: waitMs,
              minBytes: 1,
              maxBytes: FETCH_MAX_BYTES,
            }),
          ),
        )
        return { epoch: at, responses, metadata }
      }
      return run().catch((error: unknown) => ({ epoch: at, error }))
    }

    /** Turns a fetch's records into buffered messages and moves the positions past them. */
    const absorb = (outcome: Fetched): void => {
      if (outcome.epoch !== epoch || positionsEpoch !== epoch) return
      const names = new Map([...outcome.metadata.topics].map(([name, t]) => [t.id, name]))
      if (bufferEpoch !== epoch) buffer = []
      bufferEpoch = epoch
      for (const response of outcome.responses) {
        for (const topicResponse of response.responses) {
          const topic = names.get(topicResponse.topicId)
          if (topic === undefined) continue
          for (const { partitionIndex: partition, records } of topicResponse.partitions) {
            const id = partitionId(topic, partition)
            let position = positions.get(id)
            if (position === undefined || records === undefined || records === null) continue
            for (const batch of records) {
              const next = batch.firstOffset + BigInt(batch.lastOffsetDelta) + 1n
              // Control batches (transaction markers) take offsets but carry no messages.
              if ((batch.attributes & IS_CONTROL) === 0) {
                for (const record of batch.records) {
                  const offset = batch.firstOffset + BigInt(record.offsetDelta)
                  if (offset < position) continue
                  buffer.push({
                    topic,
                    partition,
                    offset,
                    key: record.key?.toString('utf8') ?? '',
                    value: new Uint8Array(record.value ?? []),
                    headers: Object.fromEntries(
                      record.headers.map(([k, v]) => [
                        k?.toString('utf8') ?? '',
                        v?.toString('utf8') ?? '',
                      ]),
                    ),
                  })
                }
              }
              if (next > position) position = next
            }
            positions.set(id, position)
          }
        }
      }
    }

    /** The partition the latest batch began with. */
    let servedFirst = ''
    /**
     * The next batch from the buffer, which holds one fetch: a run of messages per partition. A
     * batch begins with the run after the one the previous batch began with (then fills up from
     * the runs after it), so under a backlog consecutive batches come from different partitions
     * and share no key: a worker can settle them side by side. Per partition, order is kept.
     */
    const take = (): DeliveredMessage[] => {
      let start = 0
      let afterServed = false
      for (let i = 0; i < buffer.length; i++) {
        const m = buffer[i] as DeliveredMessage
        const id = partitionId(m.topic, m.partition)
        const runStart =
          i === 0 || id !== partitionId(buffer[i - 1]!.topic, buffer[i - 1]!.partition)
        if (!runStart) continue
        if (afterServed) {
          start = i
          break
        }
        afterServed = id === servedFirst
      }
      if (start > 0) buffer = [...buffer.slice(start), ...buffer.slice(0, start)]
      const first = buffer[0] as DeliveredMessage
      servedFirst = partitionId(first.topic, first.partition)
      return buffer.splice(0, maxBatch)
    }

    /** Resolves true when `promise` settles, false after `ms`, on abort, or on a wake-up. */
    const settles = (
      promise: Promise<unknown> | undefined,
      ms: number,
      signal: AbortSignal | undefined,
    ): Promise<boolean> =>
      new Promise((resolve) => {
        const finish = (settled: boolean): void => {
          clearTimeout(timer)
          signal?.removeEventListener('abort', interrupt)
          wakers.delete(interrupt)
          resolve(settled)
        }
        const interrupt = (): void => finish(false)
        const timer = setTimeout(interrupt, Math.max(0, ms))
        signal?.addEventListener('abort', interrupt, { once: true })
        wakers.add(interrupt)
        void promise?.then(() => finish(true))
      })

    const self: BusConsumer = {
      async poll(maxWaitMs: number, signal?: AbortSignal): Promise<DeliveredMessage[]> {
        if (closing !== undefined) throw new CairnError(ErrorCode.CLOSED, 'consumer is closed')
        if (polling) throw new CairnError(ErrorCode.BUS_ERROR, 'one poll at a time per consumer')
        polling = true
        try {
          const deadline = Date.now() + maxWaitMs
          let first = true
          for (;;) {
            if (closing !== undefined || signal?.aborted === true) return []
            if (bufferEpoch === epoch && buffer.length > 0) return take()
            const remaining = deadline - Date.now()
            if (remaining <= 0 && !first) return []
            first = false
            try {
              if (membershipLost) {
                membershipLost = false
                await client.joinGroup({}).catch((error: unknown) => {
                  membershipLost = true
                  throw error
                })
              }
              await ensurePositions()
            } catch (error) {
              if (closing !== undefined) return []
              throw toCairnError(error, `joining group ${groupId} and reading its offsets`)
            }
            if (closing !== undefined) return []
            if (positions.size === 0) {
              // No partition for this member (more members than partitions): wait for a rebalance.
              await settles(undefined, remaining, signal)
              continue
            }
            if (inflight === undefined) {
              inflight = startFetch(Math.min(config.fetchWait, Math.max(0, remaining)))
              inflightSince = Date.now()
            }
            if (!(await settles(inflight, remaining, signal))) {
              // A fetch is answered within its wait at the broker; one that is not after a request
              // timeout more means a broker that hangs (it keeps its connections, so nothing
              // fails): say so instead of looking idle. The fetch stays; its outcome is used later.
              const silent = Date.now() - inflightSince
              if (silent > config.fetchWait + config.timeout && closing === undefined) {
                throw new CairnError(
                  ErrorCode.BUS_UNAVAILABLE,
                  `fetching from ${describe}: no answer for ${silent} ms`,
                  { retryable: true },
                )
              }
              continue
            }
            const outcome = await inflight
            inflight = undefined
            if ('error' in outcome) {
              // The client's own close interrupts the fetch: not an error of the bus.
              if (closing !== undefined) return []
              if (
                outcome.error instanceof Error &&
                findErrorBy(outcome.error, 'apiId', 'OFFSET_OUT_OF_RANGE') !== null
              ) {
                positionsEpoch = -1
                continue
              }
              throw toCairnError(outcome.error, `fetching from ${describe}`)
            }
            absorb(outcome)
          }
        } finally {
          polling = false
        }
      },

      async commit(messages: readonly DeliveredMessage[]): Promise<void> {
        if (closing !== undefined) throw new CairnError(ErrorCode.CLOSED, 'consumer is closed')
        const next = new Map<string, CommitOffset>()
        for (const m of messages) {
          const id = partitionId(m.topic, m.partition)
          const offset = m.offset + 1n
          if (offset > (next.get(id)?.offset ?? -1n)) {
            next.set(id, { topic: m.topic, partition: m.partition, offset, leaderEpoch: -1 })
          }
        }
        const offsets = [...next].flatMap(([id, o]) => {
          const mine = owned.some((a) => a.topic === o.topic && a.partitions.includes(o.partition))
          // A partition that moved to another member is theirs to commit.
          return mine && o.offset > (floor.get(id) ?? -1n) ? [o] : []
        })
        if (offsets.length === 0) return
        try {
          await answered('committing offsets', [client.commit({ offsets })])
        } catch (error) {
          if (error instanceof Error && findErrorBy(error, 'needsRejoin', true) !== null) {
            // The group went on without this member (its session lapsed while the broker or
            // this process hung) and the client's own rejoins did not help: it owns nothing now.
            // As for any partition it no longer owns, the commit is dropped; the member joins
            // again at the next poll and its messages are delivered again (the new owner's).
            log.warn({ err: error.message }, 'not a member of the group any more; rejoining')
            lostMembership()
            return
          }
          throw toCairnError(error, `committing offsets of group ${groupId}`)
        }
        for (const o of offsets) {
          const id = partitionId(o.topic, o.partition)
          if (o.offset > (floor.get(id) ?? -1n)) floor.set(id, o.offset)
        }
      },

      close(): Promise<void> {
        closing ??= (async () => {
          resources.delete(self)
          wakeAll()
          client.removeListener('consumer:group:join', onJoin)
          // The 'error' listener stays: leaving the group can fail with an 'error' event (a
          // connection closed meanwhile, say), which without a listener would crash the process.
          // Closing leaves the group, so its partitions go to the other members at once.
          await client.close().catch((error: unknown) => {
            log.warn({ err: error }, 'closing a Kafka consumer failed')
          })
          await inflight
        })()
        return closing
      },
      [Symbol.asyncDispose]: () => self.close(),
    }

    try {
      // Refuse an unknown topic up front, as the in-process bus does, rather than join a group
      // whose assignment can never be computed.
      await client.metadata({ topics })
      client.topics.trackAll(...topics)
      client.on('consumer:group:join', onJoin)
      client.on('error', onError)
      // A group coordinator that is still loading answers the join with an error for a few
      // seconds (the first group of a fresh cluster, a broker just restarted): wait for it.
      const until = performance.now() + COORDINATOR_WAIT_MS
      for (;;) {
        try {
          await client.joinGroup({})
          break
        } catch (error) {
          if (!isBrokerTransient(error) || performance.now() > until) throw error
          await sleep(250)
        }
      }
      await ensurePositions()
    } catch (error) {
      client.removeListener('consumer:group:join', onJoin)
      await client.close().catch(() => {})
      throw toCairnError(error, `joining group ${groupId} on ${describe}`)
    }
    resources.add(self)
    return self
  }

  const bus: KafkaBus = {
    describe,
    brokers: config.brokers,
    async ensureTopics(specs: readonly TopicSpec[]): Promise<void> {
      assertOpen()
      if (specs.length === 0) return
      for (const spec of specs) positiveInt(`partitions of ${spec.name}`, spec.partitions)
      try {
        const existing = new Set(await adminClient().listTopics())
        const missing = specs.filter((s) => !existing.has(s.name))
        if (missing.length > 0) {
          await adminClient()
            .createTopics({
              topics: missing.map((s) => ({
                topic: s.name,
                partitions: s.partitions,
                replicas: config.replicationFactor,
              })),
            })
            .then(
              () => logger.info({ topics: missing.map((s) => s.name) }, 'created topics'),
              (error: unknown) => {
                // Another process created them in the same instant: that is success. The broker's
                // listing may not show them yet; awaitLeaders below waits until it does.
                if (!onlyAlreadyExists(error)) throw error
                logger.debug({ topics: missing.map((s) => s.name) }, 'topics created meanwhile')
              },
            )
        }
      } catch (error) {
        throw toCairnError(error, `creating topics on ${describe}`)
      }
      await awaitLeaders(specs)
    },
    producer,
    consumer,
    async lag(groupId: string, names: readonly string[]): Promise<TopicLag[]> {
      assertOpen()
      try {
        const metadata = await answered('reading topic metadata', [
          adminClient().metadata({ topics: [...names] }),
        ])
        const at = (timestamp: bigint) =>
          names.map((name) => ({
            name,
            partitions: Array.from(
              { length: metadata[0].topics.get(name)?.partitionsCount ?? 0 },
              (_, partitionIndex) => ({ partitionIndex, timestamp }),
            ),
          }))
        const [ends, starts, groupOffsets] = await answered('reading consumer lag', [
          adminClient().listOffsets({ topics: at(LATEST) }),
          adminClient().listOffsets({ topics: at(EARLIEST) }),
          adminClient().listConsumerGroupOffsets({ groups: [groupId] }),
        ])
        const offsetOf = (
          listed: readonly {
            name: string
            partitions: { partitionIndex: number; offset: bigint }[]
          }[],
          name: string,
          partition: number,
        ): bigint =>
          listed
            .find((t) => t.name === name)
            ?.partitions.find((p) => p.partitionIndex === partition)?.offset ?? 0n
        const committed = groupOffsets.find((g) => g.groupId === groupId)?.topics ?? []
        return names.map((name) => {
          let lag = 0n
          for (const p of ends.find((t) => t.name === name)?.partitions ?? []) {
            const c = committed
              .find((t) => t.name === name)
              ?.partitions.find((x) => x.partitionIndex === p.partitionIndex)?.committedOffset
            // No committed offset (-1): the group starts at the log's start.
            const from = c === undefined || c < 0n ? offsetOf(starts, name, p.partitionIndex) : c
            if (p.offset > from) lag += p.offset - from
          }
          return { topic: name, lag: Number(lag) }
        })
      } catch (error) {
        throw toCairnError(error, `reading the lag of group ${groupId}`)
      }
    },
    async close(): Promise<void> {
      if (closed) return
      closed = true
      for (const resource of [...resources].reverse()) await resource.close()
      await admin?.close().catch((error: unknown) => {
        logger.warn({ err: error }, 'closing the Kafka admin client failed')
      })
    },
    [Symbol.asyncDispose]: () => bus.close(),
  }
  return bus
}
