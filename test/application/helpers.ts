import assert from 'node:assert/strict'
import { commandEnvelope } from '../../src/application/decider.ts'
import type { StoredEnvelope } from '../../src/core/envelope.ts'
import type { EventStore } from '../../src/event-store/event-store.ts'
import type { HandlerContext } from '../../src/worker/worker.ts'

/** A worker's context for calling a non-transactional handler directly. */
export const handlerCtx: HandlerContext = {
  tx: undefined,
  attempt: 1,
  signal: new AbortController().signal,
}

/** The types of an aggregate's stored envelopes, in order, commands marked `>`. */
export const streamTypes = async (es: EventStore, type: string, id: string): Promise<string[]> =>
  (await es.readStream(type, id)).map((e) =>
    e.metadata.kind === 'command' ? `>${e.event_type}` : e.event_type,
  )

/** Stores a command as the OMS would (its envelope under `commandId`), without deciding it. */
export const storeCommand = async (
  es: EventStore,
  command: Parameters<typeof commandEnvelope>[0],
  payload: Record<string, unknown>,
  commandId: string,
): Promise<StoredEnvelope> => {
  const r = await es.append({ envelopes: [commandEnvelope(command, payload, { commandId })] })
  const stored = r.envelopes[0]
  assert.ok(stored !== undefined)
  return stored
}
