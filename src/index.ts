// The curated public API of cairn. Adapters are subpath exports (see package.json).
export {
  canonicalJson,
  contentHash,
  createEnvelope,
  domainEventId,
  idempotencyHash,
  uuidV5,
  validateEnvelope,
} from './core/envelope.ts'
export type {
  EnvelopeMetadata,
  EnvelopeValidation,
  EventEnvelope,
  EventKind,
  NewEnvelope,
  StoredEnvelope,
} from './core/envelope.ts'
export { CairnError, ErrorCode, isCairnError } from './core/errors.ts'
export type { CairnErrorOptions } from './core/errors.ts'
export type { Clock } from './core/ports/clock.ts'
export type { Logger } from './core/ports/logger.ts'
export { listAll } from './core/ports/object-store.ts'
export type {
  ObjectStore,
  PutOutcome,
  ConditionalPutResult,
  StoredObject,
} from './core/ports/object-store.ts'
export type { Sql, SqlQueryable } from './core/ports/sql.ts'
export { inSpan, noopTracer } from './core/ports/tracer.ts'
export type { Span, SpanAttributes, SpanKind, SpanOptions, Tracer } from './core/ports/tracer.ts'
export { createEventStore } from './event-store/event-store.ts'
export type {
  AppendInput,
  AppendResult,
  CommitNotice,
  EventStore,
  EventStoreOptions,
  ReadStreamOptions,
} from './event-store/event-store.ts'
export { assertConformant, probeObjectStore } from './event-store/probe.ts'
export type { ProbeReport } from './event-store/probe.ts'
export { createSequenceAllocator } from './sequencing/allocator.ts'
export type { SequenceAllocator } from './sequencing/allocator.ts'
export { migrate } from './adapters/sql/migrations.ts'
export { loadConfig } from './config/env.ts'
export type { CairnConfig } from './config/env.ts'
export { openWriteSide } from './config/compose.ts'
export type {
  Bus,
  BusConsumer,
  BusMessage,
  BusProducer,
  DeliveredMessage,
  TopicSpec,
} from './core/ports/bus.ts'
export { createPublisher, listQuarantine } from './publisher/publisher.ts'
export type { Publisher, PublisherMetrics, PublisherOptions } from './publisher/publisher.ts'
export { createProcessedEventRegistry } from './registry/processed-events.ts'
export type {
  ClaimOutcome,
  ProcessedEventRegistry,
  RegistryOptions,
  RegistryRow,
} from './registry/processed-events.ts'
export { createWorker } from './worker/worker.ts'
export type {
  Handle,
  HandlerContext,
  Worker,
  WorkerMetrics,
  WorkerOptions,
} from './worker/worker.ts'
export { createOmsApp } from './http/app.ts'
export type { HttpApp, HttpRequest, HttpResponse, OmsApp, OmsAppOptions } from './http/app.ts'
export { openCairn } from './config/runtime.ts'
export type { CairnComponents, CairnRuntime } from './config/runtime.ts'
export { createStartupGate, isWorthWaiting } from './config/startup.ts'
export type { StartupGate, StartupGateOptions } from './config/startup.ts'

// Building a service on cairn: declare a domain, run it (docs/building-a-service.md).
export {
  defineAggregate,
  defineDomain,
  defineEvent,
  defineProcessManager,
  defineProjection,
  defineQuery,
  isRejection,
  reject,
  send,
} from './application/define.ts'
export type {
  AggregateDefinition,
  AggregateEventOf,
  CommandDefinition,
  CommandRequest,
  CommandSpec,
  CommandStorage,
  DecideContext,
  Delivered,
  DomainDefinition,
  EventDefinition,
  EventMeta,
  EventOf,
  Expectation,
  ProcessManagerDefinition,
  ProjectionContext,
  ProjectionDefinition,
  QueryContext,
  QueryDefinition,
  ReadState,
  Rejection,
  StateOf,
  Upcaster,
} from './application/define.ts'
export { COMMAND_REJECTED, foldStream } from './application/decider.ts'
export type { CommandResult } from './application/decider.ts'
export { createCommandProcessor } from './application/command-processor.ts'
export type { CommandProcessor, LoadedState } from './application/command-processor.ts'
export { openService } from './application/service.ts'
export type {
  DecideMode,
  DomainService,
  Sent,
  SendOptions,
  ServiceComponents,
  ServiceOptions,
} from './application/service.ts'
export { rebuildDeclaredProjection } from './application/reactions.ts'
export { createSnapshotStore } from './application/snapshots.ts'
export type { Snapshot, SnapshotStore } from './application/snapshots.ts'
export { domainOpenApi } from './application/http.ts'
export { runDomain } from './application/run.ts'
export type { RunOptions } from './application/run.ts'
