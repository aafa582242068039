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
