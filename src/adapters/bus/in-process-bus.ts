import { CairnError, ErrorCode } from '../../core/errors.ts'
import { DEFAULT_MAX_BATCH, partitionOf } from '../../core/ports/bus.ts'
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

type StoredRecord = {
  readonly key: string
  readonly value: Uint8Array
  readonly headers: Readonly<Record<string, string>>
}

type Topic = { readonly name: string; readonly partitions: StoredRecord[][] }

type OwnedPartition = { readonly topic: Topic; readonly partition: number; readonly id: string }

type Member = {
  readonly topics: readonly string[]
  readonly start: 'earliest' | 'latest'
  owned: OwnedPartition[]
  /** Next offset to deliver, per owned partition id. */
  positions: Map<string, number>
  /** Rotates the partition polled first, so a busy partition does not starve the others. */
  cursor: number
  wake: (() => void) | undefined
  closed: boolean
}

type Group = { readonly members: Member[]; readonly committed: Map<string, number> }

const partitionId = (topic: string, partition: number): string => `${partition}:${topic}`

const closedError = (what: string): CairnError =>
  new CairnError(ErrorCode.CLOSED, `${what} of the in-process bus is closed`)

const unknownTopic = (topic: string): CairnError =>
  new CairnError(
    ErrorCode.BUS_UNKNOWN_TOPIC,
    `topic ${topic} does not exist on the in-process bus: create it with ensureTopics first`,
    { details: { topic } },
  )

/**
 * The bus of embedded mode: Kafka's semantics in the memory of one process. Topics are arrays of
 * partitions, each an append-only log whose offsets start at 0; consumer groups hold committed
 * offsets per partition and assign partitions round-robin among their live members, rebalancing
 * when a member joins or closes. Nothing survives the process: the publisher republishes from
 * the bucket after a restart.
 */
export const createInProcessBus = (): Bus => {
  const topics = new Map<string, Topic>()
  const groups = new Map<string, Group>()
  const resources = new Set<{ close(): Promise<void> }>()
  let closed = false

  const topicOf = (name: string): Topic => {
    const topic = topics.get(name)
    if (topic === undefined) throw unknownTopic(name)
    return topic
  }

  /** Round-robin per topic among the members that subscribe to it, in join order. */
  const rebalance = (group: Group): void => {
    const owned = new Map<Member, OwnedPartition[]>(group.members.map((m) => [m, []]))
    const names = new Set(group.members.flatMap((m) => m.topics))
    for (const name of names) {
      const topic = topicOf(name)
      const subscribers = group.members.filter((m) => m.topics.includes(name))
      topic.partitions.forEach((_, partition) => {
        const member = subscribers[partition % subscribers.length]
        if (member === undefined) return
        owned.get(member)?.push({ topic, partition, id: partitionId(name, partition) })
      })
    }
    for (const [member, partitions] of owned) {
      member.owned = partitions
      member.positions = new Map(
        partitions.map((p) => [
          p.id,
          group.committed.get(p.id) ??
            (member.start === 'earliest' ? 0 : (p.topic.partitions[p.partition]?.length ?? 0)),
        ]),
      )
      member.wake?.()
    }
  }

  const take = (member: Member, max: number): DeliveredMessage[] => {
    const batch: DeliveredMessage[] = []
    const count = member.owned.length
    for (let i = 0; i < count && batch.length < max; i++) {
      const owned = member.owned[(member.cursor + i) % count]
      if (owned === undefined) continue
      const log = owned.topic.partitions[owned.partition] ?? []
      let position = member.positions.get(owned.id) ?? log.length
      while (position < log.length && batch.length < max) {
        const record = log[position]!
        batch.push({
          topic: owned.topic.name,
          partition: owned.partition,
          offset: BigInt(position),
          key: record.key,
          value: record.value.slice(),
          headers: { ...record.headers },
        })
        position++
      }
      member.positions.set(owned.id, position)
    }
    member.cursor = count === 0 ? 0 : (member.cursor + 1) % count
    return batch
  }

  const wakeSubscribers = (names: ReadonlySet<string>): void => {
    for (const group of groups.values()) {
      for (const member of group.members) {
        if (member.topics.some((t) => names.has(t))) member.wake?.()
      }
    }
  }

  /** Resolves after `ms`, or as soon as the member is woken or `signal` aborts. */
  const sleep = (member: Member, ms: number, signal: AbortSignal | undefined): Promise<void> =>
    new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', done)
        if (member.wake === done) member.wake = undefined
        resolve()
      }
      const timer = setTimeout(done, ms)
      signal?.addEventListener('abort', done, { once: true })
      member.wake = done
    })

  const producer = (): BusProducer => {
    let producerClosed = false
    const self: BusProducer = {
      async send(messages: readonly BusMessage[]): Promise<void> {
        if (producerClosed || closed) throw closedError('producer')
        // All or nothing: check every topic before appending anything.
        const targets = messages.map((m) => {
          const topic = topicOf(m.topic)
          return { topic, partition: partitionOf(m.key, topic.partitions.length) }
        })
        messages.forEach((m, i) => {
          const target = targets[i]!
          target.topic.partitions[target.partition]?.push({
            key: m.key,
            value: m.value.slice(),
            headers: { ...m.headers },
          })
        })
        wakeSubscribers(new Set(messages.map((m) => m.topic)))
      },
      async close(): Promise<void> {
        producerClosed = true
        resources.delete(self)
      },
      [Symbol.asyncDispose]: () => self.close(),
    }
    resources.add(self)
    return self
  }

  const consumer = async (options: ConsumerOptions): Promise<BusConsumer> => {
    if (closed) throw closedError('bus')
    const maxBatch = options.maxBatch ?? DEFAULT_MAX_BATCH
    if (!Number.isInteger(maxBatch) || maxBatch < 1 || options.topics.length === 0) {
      throw new CairnError(
        ErrorCode.BUS_ERROR,
        'a consumer needs at least one topic and a positive integer maxBatch',
      )
    }
    for (const name of options.topics) topicOf(name)
    const member: Member = {
      topics: [...new Set(options.topics)],
      start: options.start ?? 'earliest',
      owned: [],
      positions: new Map(),
      cursor: 0,
      wake: undefined,
      closed: false,
    }
    let group = groups.get(options.groupId)
    if (group === undefined) {
      group = { members: [], committed: new Map() }
      groups.set(options.groupId, group)
    }
    const joined = group
    joined.members.push(member)
    rebalance(joined)
    let polling = false

    const self: BusConsumer = {
      async poll(maxWaitMs: number, signal?: AbortSignal): Promise<DeliveredMessage[]> {
        if (member.closed) throw closedError('consumer')
        if (polling) throw new CairnError(ErrorCode.BUS_ERROR, 'one poll at a time per consumer')
        polling = true
        try {
          const deadline = Date.now() + maxWaitMs
          for (;;) {
            if (member.closed || signal?.aborted === true) return []
            const batch = take(member, maxBatch)
            if (batch.length > 0) return batch
            const remaining = deadline - Date.now()
            if (remaining <= 0) return []
            await sleep(member, remaining, signal)
          }
        } finally {
          polling = false
        }
      },
      async commit(messages: readonly DeliveredMessage[]): Promise<void> {
        if (member.closed) throw closedError('consumer')
        const next = new Map<string, number>()
        for (const m of messages) {
          const id = partitionId(m.topic, m.partition)
          const offset = Number(m.offset) + 1
          if (offset > (next.get(id) ?? -1)) next.set(id, offset)
        }
        for (const [id, offset] of next) {
          // A partition that moved to another member is theirs to commit.
          if (!member.owned.some((p) => p.id === id)) continue
          if (offset > (joined.committed.get(id) ?? -1)) joined.committed.set(id, offset)
        }
      },
      async close(): Promise<void> {
        if (member.closed) return
        member.closed = true
        resources.delete(self)
        joined.members.splice(joined.members.indexOf(member), 1)
        member.wake?.()
        if (joined.members.length > 0) rebalance(joined)
      },
      [Symbol.asyncDispose]: () => self.close(),
    }
    resources.add(self)
    return self
  }

  const bus: Bus = {
    describe: 'in-process',
    async ensureTopics(specs: readonly TopicSpec[]): Promise<void> {
      if (closed) throw closedError('bus')
      for (const spec of specs) {
        if (!Number.isInteger(spec.partitions) || spec.partitions < 1) {
          throw new CairnError(
            ErrorCode.BUS_ERROR,
            `topic ${spec.name}: partitions must be a positive integer, got ${spec.partitions}`,
          )
        }
      }
      for (const spec of specs) {
        if (topics.has(spec.name)) continue
        topics.set(spec.name, {
          name: spec.name,
          partitions: Array.from({ length: spec.partitions }, () => []),
        })
      }
    },
    producer: () => {
      if (closed) throw closedError('bus')
      return producer()
    },
    consumer,
    async lag(groupId: string, names: readonly string[]): Promise<TopicLag[]> {
      const committed = groups.get(groupId)?.committed
      return names.map((name) => ({
        topic: name,
        lag: topicOf(name).partitions.reduce(
          (sum, log, partition) =>
            sum + log.length - (committed?.get(partitionId(name, partition)) ?? 0),
          0,
        ),
      }))
    },
    async close(): Promise<void> {
      if (closed) return
      closed = true
      for (const resource of [...resources].reverse()) await resource.close()
    },
    [Symbol.asyncDispose]: () => bus.close(),
  }
  return bus
}
