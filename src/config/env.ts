import { CairnError, ErrorCode } from '../core/errors.ts'
import { parseApiToken } from '../http/scopes.ts'
import type { ApiToken } from '../http/scopes.ts'

/**
 * The one place that reads the environment. Every setting is validated at start and every problem
 * is reported at once (docs/configuration.md lists them all). The result is frozen.
 */
export type Mode = 'embedded' | 'distributed'
export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent'

export type CairnConfig = {
  readonly mode: Mode
  readonly dataDir: string
  readonly logLevel: LogLevel
  /** `auto`: readable lines on a terminal, JSON lines otherwise (a pipe, a file, a collector). */
  readonly logFormat: 'auto' | 'json' | 'pretty'
  readonly http: { readonly host: string; readonly port: number }
  /** This process's stable member name in the registry (restarts re-claim their own work at once). */
  readonly memberName: string | undefined
  readonly oms: {
    /** `OMS_API_TOKENS`: each entry `[<name>=]<token>[:<scope>+…]` (src/http/scopes.ts). */
    readonly tokens: readonly ApiToken[]
    readonly authDisabled: boolean
    readonly maxBodyBytes: number
    /** API requests handled at once; more are answered 503 at once (memory stays bounded). */
    readonly maxInFlight: number
  }
  readonly worker: {
    readonly maxAttempts: number
    readonly batchSize: number
    /** Side effects of a non-transactional handler (the command workers) run at once. */
    readonly concurrency: number
    /** Offsets of settled messages are committed at most this often. */
    readonly commitIntervalMs: number
  }
  readonly eventStore: {
    readonly bucket: string
    readonly idempotencyMismatchMode: 'error' | 'warn'
    readonly allowNonconformantBackend: boolean
    readonly maxIndexDelayMs: number
  }
  readonly sequencing: {
    readonly allocatorMode: 'postgres'
    readonly schema: string
    readonly handlerPrefix: string
  }
  readonly registry: {
    readonly leaseTimeoutSeconds: number
    readonly heartbeatIntervalSeconds: number
  }
  readonly publisher: {
    readonly batchSize: number
    readonly kafkaFlushBatchSize: number
    readonly kafkaFlushTimeoutSeconds: number
    readonly metricsLogIntervalSeconds: number
    readonly pollIntervalSeconds: number
    readonly dedupMaxEvents: number
    readonly dedupCheckpointMaxEvents: number
    readonly maxClockSkewSeconds: number
    readonly routes: Readonly<Record<string, string>>
    readonly defaultTopic: string
    readonly topicPartitions: number
    /** Prepended to every topic and consumer group name (several deployments on one cluster). */
    readonly topicPrefix: string
  }
  readonly s3?: {
    readonly endpoint: string
    readonly region: string
    readonly accessKeyId: string
    readonly secretAccessKey: string
    /** A request with no progress for this long fails (retryable) and is retried by its caller. */
    readonly requestTimeoutMs: number
  }
  readonly databaseUrl?: string
  /** Longest wait for a PostgreSQL connection (new, or free in the pool). */
  readonly databaseConnectTimeoutMs: number
  /** Longest wait for a statement's answer; 0: none. */
  readonly databaseQueryTimeoutMs: number
  /** Prepare parameterised statements once per connection (`CAIRN_DATABASE_PREPARE`). */
  readonly databasePrepare: boolean
  readonly kafkaBrokers?: readonly string[]
  /** OpenTelemetry traces over OTLP/HTTP; absent: tracing off, no exporter (the OTEL_* variables). */
  readonly tracing?: TracingConfig
}

export type TracingConfig = {
  /** Where spans are POSTed, e.g. `http://127.0.0.1:4318/v1/traces`. */
  readonly url: string
  readonly headers: Readonly<Record<string, string>>
  /** `OTEL_SERVICE_NAME`; absent: `cairn-<component>`. */
  readonly serviceName: string | undefined
  /** Share of new traces sampled (0 to 1); parent-based: a propagated decision is followed. */
  readonly sampler: { readonly ratio: number; readonly parentBased: boolean }
}

type Env = Readonly<Record<string, string | undefined>>

const REMOVED: Record<string, string> = {
  ENABLE_S3_EVENT_STORE:
    'ENABLE_S3_EVENT_STORE was removed: the S3-compatible bucket is always the event store. Unset it.',
  ENABLE_DUAL_WRITE:
    'ENABLE_DUAL_WRITE was removed: there is no dual-write migration mode any more. Unset it.',
}

/** Names whose values never reach a log line or an error message. */
export const SECRET_NAMES = new Set([
  'CAIRN_S3_SECRET_ACCESS_KEY',
  'CAIRN_DATABASE_URL',
  'OMS_API_TOKENS',
  'OTEL_EXPORTER_OTLP_HEADERS',
  'OTEL_EXPORTER_OTLP_TRACES_HEADERS',
])

export const loadConfig = (env: Env = process.env): CairnConfig => {
  const problems: string[] = []
  const raw = (name: string): string | undefined => {
    const v = env[name]
    return v === undefined || v.trim() === '' ? undefined : v.trim()
  }
  const str = (name: string, fallback: string): string => raw(name) ?? fallback
  const bool = (name: string, fallback: boolean): boolean => {
    const v = raw(name)
    if (v === undefined) return fallback
    if (/^(true|1|yes|on)$/i.test(v)) return true
    if (/^(false|0|no|off)$/i.test(v)) return false
    problems.push(`${name}=${v}: must be true or false`)
    return fallback
  }
  const int = (
    name: string,
    fallback: number,
    min: number,
    max = Number.MAX_SAFE_INTEGER,
  ): number => {
    const v = raw(name)
    if (v === undefined) return fallback
    const n = Number(v)
    if (!Number.isInteger(n) || n < min || n > max) {
      problems.push(`${name}=${v}: must be an integer from ${min} to ${max}`)
      return fallback
    }
    return n
  }
  const oneOf = <T extends string>(name: string, fallback: T, allowed: Record<string, T>): T => {
    const v = raw(name)
    if (v === undefined) return fallback
    const hit = allowed[v.toLowerCase()]
    if (hit === undefined) {
      problems.push(`${name}=${v}: must be one of ${Object.keys(allowed).join(', ')}`)
      return fallback
    }
    return hit
  }

  for (const [name, message] of Object.entries(REMOVED)) {
    if (env[name] !== undefined) problems.push(message)
  }
  if (!bool('ENABLE_EVENT_SOURCING', true)) {
    problems.push(
      'ENABLE_EVENT_SOURCING=false: cairn is an event store; there is no other mode. Unset it.',
    )
  }
  if (!bool('ENABLE_PROCESSED_EVENT_REGISTRY', true)) {
    problems.push(
      'ENABLE_PROCESSED_EVENT_REGISTRY=false: consumers need the processed-event registry for exactly-once side effects; it cannot be turned off.',
    )
  }

  const mode = oneOf<Mode>('CAIRN_MODE', 'embedded', {
    embedded: 'embedded',
    distributed: 'distributed',
  })
  const allocatorMode = raw('EVENT_STORE_SEQUENCE_ALLOCATOR_MODE') ?? 'postgres'
  if (allocatorMode !== 'postgres') {
    problems.push(
      `EVENT_STORE_SEQUENCE_ALLOCATOR_MODE=${allocatorMode}: only "postgres" is supported (PGlite in embedded mode); ` +
        'non-atomic modes (s3, best_effort) and "legacy" were removed because they can assign one sequence twice.',
    )
  }
  const schema = str('EVENT_STORE_SEQUENCE_SCHEMA', 'spice_event_registry')
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) {
    problems.push(`EVENT_STORE_SEQUENCE_SCHEMA=${schema}: must be a lower-case SQL identifier`)
  }
  const bucket = str('EVENT_STORE_BUCKET', 'spice-event-store')
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
    problems.push(
      `EVENT_STORE_BUCKET=${bucket}: must be a valid S3 bucket name (3–63 of a-z, 0-9, '.', '-')`,
    )
  }
  const handlerPrefix = str('EVENT_STORE_SEQUENCE_HANDLER_PREFIX', 'write_side')
  if (handlerPrefix.includes(':'))
    problems.push(`EVENT_STORE_SEQUENCE_HANDLER_PREFIX=${handlerPrefix}: must not contain ':'`)

  const lease = int('PROCESSED_EVENT_LEASE_TIMEOUT_SECONDS', 900, 1)
  const heartbeat = int('PROCESSED_EVENT_HEARTBEAT_INTERVAL_SECONDS', 30, 1)
  if (heartbeat >= lease) {
    problems.push(
      `PROCESSED_EVENT_HEARTBEAT_INTERVAL_SECONDS=${heartbeat} must be shorter than PROCESSED_EVENT_LEASE_TIMEOUT_SECONDS=${lease}`,
    )
  }
  const batchSize = int('EVENT_PUBLISHER_BATCH_SIZE', 200, 1, 100_000)

  if (raw('CAIRN_HTTP_PORT') !== undefined) {
    problems.push('CAIRN_HTTP_PORT was renamed: set PORT (default 8000) instead.')
  }
  const httpPort = int('PORT', 8000, 0, 65_535)
  const httpHost = str('CAIRN_HTTP_HOST', '127.0.0.1')
  if (mode === 'embedded' && !/^(127\.\d+\.\d+\.\d+|::1|localhost)$/.test(httpHost)) {
    problems.push(
      `CAIRN_HTTP_HOST=${httpHost}: embedded mode listens on the loopback interface only (it has no production security); use CAIRN_MODE=distributed to serve other hosts`,
    )
  }
  const tokens: ApiToken[] = []
  for (const [i, entry] of (raw('OMS_API_TOKENS') ?? '')
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t !== '')
    .entries()) {
    const parsed = parseApiToken(entry)
    // The entry is secret: name it by its place in the list.
    if ('problem' in parsed) problems.push(`OMS_API_TOKENS, entry ${i + 1}: ${parsed.problem}`)
    else tokens.push(parsed)
  }
  const member = raw('CAIRN_MEMBER_NAME')
  if (member !== undefined && !/^[A-Za-z0-9@._:-]{1,128}$/.test(member)) {
    problems.push(`CAIRN_MEMBER_NAME=${member}: use 1–128 of A-Z a-z 0-9 @ . _ : -`)
  }
  const config: {
    -readonly [K in keyof CairnConfig]: CairnConfig[K]
  } = {
    mode,
    dataDir: str('CAIRN_DATA_DIR', '.data'),
    databasePrepare: bool('CAIRN_DATABASE_PREPARE', true),
    databaseConnectTimeoutMs: int('CAIRN_DATABASE_CONNECT_TIMEOUT_SECONDS', 10, 1, 3600) * 1000,
    databaseQueryTimeoutMs: int('CAIRN_DATABASE_QUERY_TIMEOUT_SECONDS', 30, 0, 86_400) * 1000,
    logLevel: oneOf<LogLevel>('LOG_LEVEL', 'info', {
      debug: 'debug',
      info: 'info',
      warn: 'warn',
      error: 'error',
      silent: 'silent',
    }),
    logFormat: oneOf<'auto' | 'json' | 'pretty'>('LOG_FORMAT', 'auto', {
      auto: 'auto',
      json: 'json',
      pretty: 'pretty',
    }),
    http: { host: httpHost, port: httpPort },
    memberName: member,
    oms: {
      tokens,
      authDisabled: bool('OMS_AUTH_DISABLED', false),
      maxBodyBytes: int('OMS_MAX_BODY_BYTES', 1024 * 1024, 1024, 64 * 1024 * 1024),
      maxInFlight: int('OMS_MAX_IN_FLIGHT', 1024, 1, 1_000_000),
    },
    worker: {
      maxAttempts: int('WORKER_MAX_ATTEMPTS', 5, 1, 1000),
      batchSize: int('WORKER_BATCH_SIZE', 500, 1, 10_000),
      concurrency: int('WORKER_CONCURRENCY', 32, 1, 1_000),
      commitIntervalMs: int('WORKER_COMMIT_INTERVAL_MS', 500, 0, 60_000),
    },
    eventStore: {
      bucket,
      idempotencyMismatchMode: oneOf<'error' | 'warn'>(
        'EVENT_STORE_IDEMPOTENCY_MISMATCH_MODE',
        'error',
        {
          error: 'error',
          warn: 'warn',
          warning: 'warn',
          log: 'warn',
        },
      ),
      allowNonconformantBackend: bool('EVENT_STORE_ALLOW_NONCONFORMANT_BACKEND', false),
      maxIndexDelayMs: int('EVENT_STORE_MAX_INDEX_DELAY_SECONDS', 10, 1, 3600) * 1000,
    },
    sequencing: { allocatorMode: 'postgres', schema, handlerPrefix },
    registry: { leaseTimeoutSeconds: lease, heartbeatIntervalSeconds: heartbeat },
    publisher: {
      batchSize,
      kafkaFlushBatchSize: int('EVENT_PUBLISHER_KAFKA_FLUSH_BATCH_SIZE', batchSize, 1, 100_000),
      kafkaFlushTimeoutSeconds: int('EVENT_PUBLISHER_KAFKA_FLUSH_TIMEOUT_SECONDS', 10, 1, 3600),
      metricsLogIntervalSeconds: int('EVENT_PUBLISHER_METRICS_LOG_INTERVAL_SECONDS', 30, 1, 86_400),
      pollIntervalSeconds: int('EVENT_PUBLISHER_POLL_INTERVAL_SECONDS', 3, 1, 3600),
      dedupMaxEvents: int('EVENT_PUBLISHER_DEDUP_MAX_EVENTS', 10_000, 0, 10_000_000),
      dedupCheckpointMaxEvents: int(
        'EVENT_PUBLISHER_DEDUP_CHECKPOINT_MAX_EVENTS',
        2_000,
        0,
        100_000,
      ),
      maxClockSkewSeconds: int('EVENT_STORE_MAX_CLOCK_SKEW_SECONDS', 5, 1, 3600),
      routes: parseRoutes(raw('EVENT_PUBLISHER_TOPIC_ROUTES'), problems),
      defaultTopic: topicName(
        'EVENT_PUBLISHER_DEFAULT_TOPIC',
        str('EVENT_PUBLISHER_DEFAULT_TOPIC', 'cairn-events'),
        problems,
      ),
      topicPartitions: int('EVENT_PUBLISHER_TOPIC_PARTITIONS', 3, 1, 10_000),
      topicPrefix: topicPrefix(raw('CAIRN_KAFKA_TOPIC_PREFIX') ?? '', problems),
    },
  }

  if (mode === 'distributed') {
    const need = (name: string): string => {
      const v = raw(name)
      if (v === undefined) problems.push(`${name}: required in distributed mode`)
      return v ?? ''
    }
    const endpoint = need('CAIRN_S3_ENDPOINT')
    if (endpoint !== '' && !/^https?:\/\/[^/]+/.test(endpoint)) {
      problems.push(`CAIRN_S3_ENDPOINT=${endpoint}: must be an http(s) URL`)
    }
    config.s3 = {
      endpoint,
      region: str('CAIRN_S3_REGION', 'us-east-1'),
      accessKeyId: need('CAIRN_S3_ACCESS_KEY_ID'),
      secretAccessKey: need('CAIRN_S3_SECRET_ACCESS_KEY'),
      requestTimeoutMs: int('CAIRN_S3_REQUEST_TIMEOUT_SECONDS', 30, 1, 3600) * 1000,
    }
    const url = need('CAIRN_DATABASE_URL')
    if (url !== '' && !/^postgres(ql)?:\/\//.test(url)) {
      problems.push('CAIRN_DATABASE_URL: must be a postgres:// URL')
    }
    config.databaseUrl = url
    config.kafkaBrokers = need('CAIRN_KAFKA_BROKERS')
      .split(',')
      .map((b) => b.trim())
      .filter((b) => b !== '')
  }

  const tracing = tracingConfig(raw, problems)
  if (tracing !== undefined) config.tracing = tracing

  if (problems.length > 0) {
    throw new CairnError(
      ErrorCode.INVALID_CONFIG,
      `invalid configuration (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n  - ${problems.join('\n  - ')}`,
      { details: { problems } },
    )
  }
  return Object.freeze(config)
}

const TOPIC = /^[A-Za-z0-9._-]{1,249}$/

const topicName = (name: string, value: string, problems: string[]): string => {
  if (!TOPIC.test(value))
    problems.push(`${name}=${value}: not a valid Kafka topic name ([A-Za-z0-9._-], 1–249)`)
  return value
}

/** `Type=topic,Other=topic2`: the topic of events without metadata.kafka_topic, by aggregate type. */
const parseRoutes = (value: string | undefined, problems: string[]): Record<string, string> => {
  const routes: Record<string, string> = {}
  if (value === undefined) return routes
  for (const part of value.split(',')) {
    const [type, topic, ...rest] = part.split('=').map((x) => x.trim())
    if (type === undefined || type === '' || topic === undefined || rest.length > 0) {
      problems.push(`EVENT_PUBLISHER_TOPIC_ROUTES: "${part}" is not <aggregate type>=<topic>`)
      continue
    }
    routes[type] = topicName('EVENT_PUBLISHER_TOPIC_ROUTES', topic, problems)
  }
  return routes
}

const topicPrefix = (prefix: string, problems: string[]): string => {
  if (!/^[A-Za-z0-9._-]{0,100}$/.test(prefix)) {
    problems.push(`CAIRN_KAFKA_TOPIC_PREFIX=${prefix}: use at most 100 of [A-Za-z0-9._-]`)
  }
  return prefix
}

const SAMPLERS: Record<string, { ratio?: number; parentBased: boolean }> = {
  always_on: { ratio: 1, parentBased: false },
  always_off: { ratio: 0, parentBased: false },
  traceidratio: { parentBased: false },
  parentbased_always_on: { ratio: 1, parentBased: true },
  parentbased_always_off: { ratio: 0, parentBased: true },
  parentbased_traceidratio: { parentBased: true },
}

/**
 * The standard OpenTelemetry variables cairn honours (docs/configuration.md, Tracing). Tracing is
 * on only when an OTLP endpoint is set: without one nothing is created, so it costs nothing.
 */
const tracingConfig = (
  raw: (name: string) => string | undefined,
  problems: string[],
): TracingConfig | undefined => {
  const disabled = raw('OTEL_SDK_DISABLED')
  const exporter = raw('OTEL_TRACES_EXPORTER')
  if (exporter !== undefined && !/^(otlp|none)$/i.test(exporter)) {
    problems.push(`OTEL_TRACES_EXPORTER=${exporter}: cairn exports with otlp (or none)`)
  }
  const base = raw('OTEL_EXPORTER_OTLP_ENDPOINT')
  const url =
    raw('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT') ??
    (base === undefined ? undefined : `${base.replace(/\/+$/, '')}/v1/traces`)
  if (url === undefined || disabled?.toLowerCase() === 'true' || /^none$/i.test(exporter ?? '')) {
    return undefined
  }
  if (!/^https?:\/\/[^/]+/.test(url)) {
    problems.push(`OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT=${url}: must be an http(s) URL`)
  }
  const protocol = raw('OTEL_EXPORTER_OTLP_TRACES_PROTOCOL') ?? raw('OTEL_EXPORTER_OTLP_PROTOCOL')
  // Both HTTP protocols reach the same receiver, which takes JSON too; gRPC listens elsewhere.
  if (protocol !== undefined && !/^http\/(json|protobuf)$/.test(protocol)) {
    problems.push(
      `OTEL_EXPORTER_OTLP_PROTOCOL=${protocol}: cairn exports OTLP over HTTP (http/json or http/protobuf)`,
    )
  }
  const headers: Record<string, string> = {}
  for (const name of ['OTEL_EXPORTER_OTLP_HEADERS', 'OTEL_EXPORTER_OTLP_TRACES_HEADERS']) {
    for (const pair of (raw(name) ?? '').split(',')) {
      if (pair.trim() === '') continue
      const cut = pair.indexOf('=')
      try {
        if (cut <= 0) throw new URIError()
        headers[decodeURIComponent(pair.slice(0, cut).trim())] = decodeURIComponent(
          pair.slice(cut + 1).trim(),
        )
      } catch {
        // The value may be a secret: name the variable only.
        problems.push(`${name}: each entry must be key=value (URL-encoded)`)
      }
    }
  }
  const samplerName = (raw('OTEL_TRACES_SAMPLER') ?? 'parentbased_always_on').toLowerCase()
  const sampler = SAMPLERS[samplerName]
  if (sampler === undefined) {
    problems.push(
      `OTEL_TRACES_SAMPLER=${samplerName}: must be one of ${Object.keys(SAMPLERS).join(', ')}`,
    )
  }
  let ratio = sampler?.ratio ?? 1
  if (sampler !== undefined && sampler.ratio === undefined) {
    const arg = raw('OTEL_TRACES_SAMPLER_ARG') ?? '1'
    ratio = Number(arg)
    if (!Number.isFinite(ratio) || ratio < 0 || ratio > 1) {
      problems.push(`OTEL_TRACES_SAMPLER_ARG=${arg}: must be a number from 0 to 1`)
      ratio = 1
    }
  }
  return {
    url,
    headers,
    serviceName: raw('OTEL_SERVICE_NAME'),
    sampler: { ratio, parentBased: sampler?.parentBased ?? true },
  }
}

/** The configuration for display: secrets replaced. */
export const redactedConfig = (config: CairnConfig): Record<string, unknown> => ({
  ...config,
  oms: { ...config.oms, tokens: config.oms.tokens.map((t) => ({ ...t, token: '***' })) },
  ...(config.s3 === undefined ? {} : { s3: { ...config.s3, secretAccessKey: '***' } }),
  ...(config.databaseUrl === undefined
    ? {}
    : { databaseUrl: config.databaseUrl.replace(/:[^:@/]*@/, ':***@') }),
  ...(config.tracing === undefined
    ? {}
    : {
        tracing: {
          ...config.tracing,
          url: config.tracing.url.replace(/\/\/[^/@]*@/, '//***@'),
          headers: Object.fromEntries(Object.keys(config.tracing.headers).map((k) => [k, '***'])),
        },
      }),
})
