import { createPrometheusMetrics } from '../adapters/metrics/prometheus.ts'
import type { CairnConfig } from '../config/env.ts'
import { openCairn } from '../config/runtime.ts'
import type { CairnComponents, CairnRuntime } from '../config/runtime.ts'
import { createStartupGate } from '../config/startup.ts'
import { ErrorCode, isCairnError } from '../core/errors.ts'
import type { Logger } from '../core/ports/logger.ts'
import type { HttpApp } from '../http/app.ts'
import { createStartingApp } from '../http/ops.ts'
import { cliContext } from './context.ts'
import { serveHttp } from './serve.ts'

/**
 * The HTTP address of a cairn process from one line of its output: the JSON log line `runService`
 * writes once it serves (`<name> is running`, with `http`), else null. Tools that start cairn
 * (the tests, the benchmark) wait for it.
 */
export const servingUrlOf = (line: string): string | null => {
  if (!line.startsWith('{')) return null
  try {
    const entry = JSON.parse(line) as { msg?: unknown; http?: unknown }
    return typeof entry.msg === 'string' &&
      entry.msg.endsWith('is running') &&
      typeof entry.http === 'string'
      ? entry.http
      : null
  } catch {
    return null
  }
}

/** How long a stopped process may wait for its event loop to empty before it exits anyway. */
const EXIT_GRACE_MS = 2_000

/**
 * Runs cairn's components in this process until SIGINT or SIGTERM. It serves HTTP at once: while
 * it waits for the services it needs (PostgreSQL, the object store, Kafka; in any order, with
 * backoff, config/startup.ts), `/readyz` answers 503 with what it waits for. A failure waiting
 * cannot fix (bad configuration, a bucket that fails the probe, a schema newer than the code)
 * stops it with exit code 1. On a signal it drains: readiness turns 503, the HTTP server stops
 * accepting and finishes requests in flight, the loops stop at their next safe point and
 * resources close in reverse order under a deadline. A loop that fails (or ends by itself) stops
 * the process with exit code 1: a supervisor restarts it. Outages of the dependencies once it
 * runs do not end loops: they pause and resume (docs/operations.md).
 */
export const runService = async (
  name: string,
  components: CairnComponents,
  options: {
    readonly check?: (config: CairnConfig) => void
    readonly banner?: (url: string) => string
    /** Opens the components (default: cairn's own, `openCairn`); a declared domain brings its own. */
    readonly open?: (
      config: CairnConfig,
      logger: Logger,
      opts: Parameters<typeof openCairn>[3],
    ) => Promise<CairnRuntime>
  } = {},
): Promise<void> => {
  const { config, logger } = cliContext()
  options.check?.(config)
  let running = true
  let failed: unknown
  const stopping = new AbortController()
  let wake: (reason: string) => void = () => {}
  const stopped = new Promise<string>((resolve) => {
    wake = resolve
  })
  const onSignal = (signal: NodeJS.Signals) => {
    stopping.abort()
    wake(signal)
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  const metrics = createPrometheusMetrics()
  const gate = createStartupGate({ logger, signal: stopping.signal })
  // Until the components are open, the starting app answers (readiness 503, with the reason).
  let current: HttpApp = createStartingApp({
    waitingFor: () => (running ? gate.describe() : 'stopping'),
    metrics,
  })
  const app: HttpApp = {
    get maxBodyBytes() {
      return current.maxBodyBytes
    },
    handle: (req) => current.handle(req),
  }
  let runtime: CairnRuntime | undefined
  let closeHttp: (() => Promise<void>) | undefined
  try {
    const served = await serveHttp(app, config.http.host, config.http.port, logger)
    closeHttp = () => served.close()
    logger.info({ component: name, mode: config.mode, http: served.url }, `${name} is starting`)
    const opts = { metrics, running: () => running, wait: gate.wait }
    runtime = await (options.open === undefined
      ? openCairn(config, logger, components, opts)
      : options.open(config, logger, opts))
    current = runtime.app
    for (const loop of runtime.loops) {
      loop.done.then(
        () => {
          // A loop ends by itself only when asked to stop: otherwise the process cannot go on
          // (exit 1, so that a supervisor restarts it).
          if (running) {
            failed ??= new Error(`${loop.name} stopped unexpectedly`)
            wake(`${loop.name} stopped`)
          }
        },
        (error: unknown) => {
          failed ??= error
          logger.error({ loop: loop.name, err: String(error) }, 'component failed; stopping')
          wake(`${loop.name} failed`)
        },
      )
    }
    logger.info({ component: name, mode: config.mode, http: served.url }, `${name} is running`)
    if (options.banner !== undefined) process.stdout.write(`${options.banner(served.url)}\n`)
    const reason = await stopped
    logger.info({ reason }, 'stopping')
  } catch (error) {
    // A signal while it waited for a service is a stop, not a failure.
    if (stopping.signal.aborted && isCairnError(error, ErrorCode.CLOSED)) {
      logger.info({ reason: error.message }, 'stopping')
    } else {
      failed ??= error
      logger.error({ component: name, err: String(error) }, `${name} cannot start`)
    }
  } finally {
    running = false
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    await closeHttp?.()
    await runtime?.close()
    // Everything is closed. A Kafka consumer closed in the middle of a rebalance leaves a timer of
    // its client behind (up to the rebalance timeout, 30 s): it must not hold the process.
    setTimeout(() => process.exit(), EXIT_GRACE_MS).unref()
  }
  if (failed !== undefined) {
    throw failed instanceof Error ? failed : new Error(`${name} failed`, { cause: failed })
  }
  logger.info({ component: name }, 'stopped')
}
