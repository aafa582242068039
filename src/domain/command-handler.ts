import { createCommandProcessor } from '../application/command-processor.ts'
import type { Logger } from '../core/ports/logger.ts'
import type { EventStore } from '../event-store/event-store.ts'
import type { Handle } from '../worker/worker.ts'
import { commandTarget } from './commands.ts'
import type { DomainCommand } from './commands.ts'
import { foldClass, foldDatabase, foldInstance, liveClass, liveInstance } from './decide.ts'
import { AGGREGATE, classAggregateId, commandHandlerFor } from './model.ts'
import { ontology } from './ontology.ts'

/** What a command handler returns; the registry stores it as the command's `result`. */
export type { CommandResult } from '../application/decider.ts'

export type CommandHandlerOptions = {
  readonly eventStore: EventStore
  readonly logger?: Logger
  /** Decisions tried again after a sequence conflict before giving up with a retryable error (default 5). */
  readonly maxConflicts?: number
  readonly now?: () => number
}

/**
 * The expected sequence for a create command: 0 for a new aggregate, the current sequence when
 * the aggregate does not exist any more (deleted, a rejected create, or a parent deleted or
 * re-created since: generations), and 0 otherwise so that the append conflicts (409). A
 * command still undecided at the head of the stream counts as existing.
 */
export const expectedSeqForCreate = async (
  eventStore: EventStore,
  cmd: DomainCommand,
): Promise<number> => {
  const target = commandTarget(cmd)
  const current = await eventStore.currentSequence(target.aggregateType, target.aggregateId)
  if (current === 0) return 0
  const events = await eventStore.readStream(target.aggregateType, target.aggregateId, {
    toSeq: current,
  })
  const last = events.at(-1)
  if (last === undefined || last.sequence_number !== current || last.metadata.kind !== 'domain') {
    return 0
  }
  const read = async (type: string, id: string) => eventStore.readStream(type, id)
  const database = foldDatabase(await read(AGGREGATE.database, cmd.db))
  let live: boolean
  if (cmd.type === 'CREATE_DATABASE') {
    live = foldDatabase(events) !== null
  } else if (!('classId' in cmd)) {
    live = database !== null
  } else if (!('instanceId' in cmd)) {
    live = liveClass(foldClass(events), database) !== null
  } else {
    const cls =
      database === null
        ? null
        : liveClass(
            foldClass(await read(AGGREGATE.ontologyClass, classAggregateId(cmd.db, cmd.classId))),
            database,
          )
    live = liveInstance(foldInstance(events), cls) !== null
  }
  return live ? 0 : current
}

/**
 * The command handler of the ontology and instance workers (all three command topics): the
 * application API's command processor over the ontology's declaration (ontology.ts). Per command:
 * an outcome already stored is returned as is; otherwise it reads the states the command depends
 * on, decides, and appends the one domain event with `expectedSeq` = the aggregate's sequence at
 * decision time, deciding again after a conflict. Event-store outages throw (the worker retries);
 * a malformed command is a rejection result, never a throw. Its events name the worker that
 * decided them (`service`), as the runtime's roles split the commands.
 */
export const createCommandHandler = (options: CommandHandlerOptions): Handle =>
  createCommandProcessor({
    domain: ontology,
    eventStore: options.eventStore,
    service: (aggregate) => commandHandlerFor(aggregate.type),
    ...(options.logger === undefined ? {} : { logger: options.logger }),
    ...(options.maxConflicts === undefined ? {} : { maxConflicts: options.maxConflicts }),
    ...(options.now === undefined ? {} : { now: options.now }),
  }).handle
