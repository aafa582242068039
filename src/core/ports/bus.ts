/**
 * The bus port: Kafka's model of topics, keyed partitions and consumer groups. Adapters: Kafka
 * (distributed mode) and an in-process bus with the same semantics (embedded mode).
 *
 * Guarantees every adapter gives:
 * - A topic has a fixed number of partitions; a message goes to partition
 *   `partitionOf(key, partitions)`, Kafka's Java default (murmur2), so one key always lands on
 *   one partition and keeps its order there.
 * - Topics are created by `ensureTopics` only; sending to a topic that does not exist rejects
 *   with `BUS_UNKNOWN_TOPIC` (auto-creation is off).
 * - `send` resolves once every message is durable (Kafka: acknowledged by all in-sync replicas of
 *   an idempotent producer); it rejects with a `CairnError` otherwise, `retryable` when sending
 *   again may succeed. A rejected send may still have delivered some of its messages: delivery is
 *   at least once, and consumers deduplicate.
 * - Consumers of one group share the partitions of their topics: each partition is owned by one
 *   live member at a time. When a member joins or closes, the group rebalances, and every member
 *   restarts each partition it owns from the group's committed offset (or from `start` when the
 *   group has none).
 * - A message is delivered again, to this or another member, until its offset is committed:
 *   after a restart, a rebalance, or to a new consumer of the group. Delivery is at least once.
 * - Messages and values returned by `poll` belong to the caller; values passed to `send` are not
 *   kept by reference.
 *
 * The in-process bus keeps everything in memory: after a restart the publisher republishes from
 * the bucket, which is the source of truth.
 */
export type BusMessage = {
  readonly topic: string
  readonly key: string
  readonly value: Uint8Array
  readonly headers: Readonly<Record<string, string>>
}

export type DeliveredMessage = BusMessage & {
  readonly partition: number
  readonly offset: bigint
}

export type TopicSpec = {
  readonly name: string
  readonly partitions: number
}

export type BusProducer = {
  /**
   * Resolves once every message is acknowledged by all in-sync replicas (acks=all, idempotent
   * producer). Per key, the order of `messages` is kept, also across sends awaited in turn.
   * Rejects with a `CairnError` if any message is not acknowledged (`retryable` when a resend may
   * succeed; `BUS_UNKNOWN_TOPIC` for a topic that does not exist).
   */
  send(messages: readonly BusMessage[]): Promise<void>
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

/** Most messages one `poll` returns unless the consumer asks otherwise. */
export const DEFAULT_MAX_BATCH = 500

export type ConsumerOptions = {
  readonly groupId: string
  readonly topics: readonly string[]
  readonly clientId?: string
  /** Where a partition with no committed offset in the group starts: default 'earliest'. */
  readonly start?: 'earliest' | 'latest'
  /** Most messages one `poll` returns (default `DEFAULT_MAX_BATCH`, 500). */
  readonly maxBatch?: number
}

export type BusConsumer = {
  /**
   * Next batch of messages of the partitions this member owns, in offset order per partition;
   * waits up to `maxWaitMs` for the first one and returns `[]` on timeout, when `signal` aborts,
   * or when the consumer closes meanwhile. A message is delivered again (to this or another
   * member) until its offset is committed — after a restart, a rebalance, or a new consumer in the
   * same group. One poll at a time per consumer. Rejects with a `CairnError` when the bus is
   * unreachable (`retryable`) or the consumer is closed (`CLOSED`).
   */
  poll(maxWaitMs: number, signal?: AbortSignal): Promise<DeliveredMessage[]>
  /**
   * Commits, per partition, the offset after the last given message: committing means everything
   * up to it is done. Messages of partitions this member no longer owns are ignored (their new
   * owner receives them again), and a commit never moves a partition back behind what this member
   * committed or started from. Resolves once the group holds the offsets.
   */
  commit(messages: readonly DeliveredMessage[]): Promise<void>
  /** Leaves the group (its partitions go to the other members at once); safe to call twice. */
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

/** One topic's lag in a consumer group, in messages. */
export type TopicLag = { readonly topic: string; readonly lag: number }

export type Bus = {
  /** A short name for logs and errors, e.g. `kafka://127.0.0.1:9092` or `in-process`. */
  readonly describe: string
  /** Creates the topics that do not exist yet; an existing topic is left as it is. Idempotent. */
  ensureTopics(topics: readonly TopicSpec[]): Promise<void>
  producer(options?: { readonly clientId?: string }): BusProducer
  /** Resolves once the consumer is a member of its group, with its partitions assigned. */
  consumer(options: ConsumerOptions): Promise<BusConsumer>
  /**
   * A group's lag per topic: the messages after its committed offsets (from the start of the log
   * where it committed none), summed over the topic's partitions. For the operator's overview;
   * it changes nothing.
   */
  lag(groupId: string, topics: readonly string[]): Promise<TopicLag[]>
  /** Closes every producer and consumer made by this bus; safe to call twice. */
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

const encoder = new TextEncoder()

/**
 * Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2): a signed 32-bit hash of the
 * bytes.
 */
export const murmur2 = (data: Uint8Array): number => {
  const m = 0x5bd1e995
  const length = data.length
  let h = (0x9747b28c ^ length) | 0
  const whole = length & ~3
  for (let i = 0; i < whole; i += 4) {
    let k =
      (data[i] ?? 0) |
      ((data[i + 1] ?? 0) << 8) |
      ((data[i + 2] ?? 0) << 16) |
      ((data[i + 3] ?? 0) << 24)
    k = Math.imul(k, m)
    k ^= k >>> 24
    k = Math.imul(k, m)
    h = Math.imul(h, m)
    h ^= k
  }
  const rest = length & 3
  if (rest > 0) {
    if (rest === 3) h ^= (data[whole + 2] ?? 0) << 16
    if (rest >= 2) h ^= (data[whole + 1] ?? 0) << 8
    h ^= data[whole] ?? 0
    h = Math.imul(h, m)
  }
  h ^= h >>> 13
  h = Math.imul(h, m)
  h ^= h >>> 15
  return h | 0
}

/** The partition of a key: Kafka's Java default partitioner, `toPositive(murmur2(key)) % n`. */
export const partitionOf = (key: string | Uint8Array, partitions: number): number =>
  (murmur2(typeof key === 'string' ? encoder.encode(key) : key) & 0x7fffffff) % partitions
