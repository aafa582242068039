import type { Bus, DeliveredMessage } from '../../src/core/ports/bus.ts'
import { uniqueName } from './services.ts'

/**
 * Reads a topic with a fresh consumer group until `until(messages)` holds or `timeoutMs` passes;
 * returns every message seen (duplicates included) in delivery order.
 */
export const collect = async (
  bus: Bus,
  topic: string,
  until: (messages: readonly DeliveredMessage[]) => boolean,
  timeoutMs = 20_000,
): Promise<DeliveredMessage[]> => {
  // The publisher creates topics on first use; the reader may come first.
  await bus.ensureTopics([{ name: topic, partitions: 3 }])
  const consumer = await bus.consumer({ groupId: uniqueName('collect'), topics: [topic] })
  const seen: DeliveredMessage[] = []
  const deadline = Date.now() + timeoutMs
  try {
    while (!until(seen) && Date.now() < deadline) {
      const batch = await consumer.poll(Math.min(200, Math.max(1, deadline - Date.now())))
      seen.push(...batch)
      if (batch.length > 0) await consumer.commit(batch)
    }
  } finally {
    await consumer.close()
  }
  return seen
}

/** `collect` until `count` distinct event ids (the `event_id` header) have been seen. */
export const collectDistinct = (
  bus: Bus,
  topic: string,
  count: number,
  timeoutMs?: number,
): Promise<DeliveredMessage[]> =>
  collect(bus, topic, (ms) => new Set(ms.map((m) => m.headers.event_id)).size >= count, timeoutMs)

/** Waits until `check` holds, polling every 20 ms; throws with `what` on timeout. */
export const eventually = async (
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 15_000,
): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}
