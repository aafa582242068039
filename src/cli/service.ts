import { createPrometheusMetrics } from '../adapters/metrics/prometheus.ts'
import type { CairnConfig } from '../config/env.ts'
import { openCairn } from '../config/runtime.ts'
import type { CairnComponents, CairnRuntime } from '../config/runtime.ts'
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

/**
 * Runs cairn's components in this process until SIGINT or SIGTERM, then drains: readiness turns
 * 503, the HTTP server stops accepting and finishes requests in flight, the loops stop at their
 * next safe point and resources close in reverse order under a deadline. A loop that fails (or
 * ends by itself) stops the process with exit code 1: a supervisor restarts it. Outages of the
 * dependencies do not end loops: they pause and resume (docs/operations.md).
 */
export const runService = async (
  name: string,
  components: CairnComponents,
  options: {
    readonly check?: (config: CairnConfig) => void
    readonly banner?: (url: string) => string
  } = {},
): Promise<void> => {
  const { config, logger } = cliContext()
  options.check?.(config)
  let running = true
  let failed: unknown
  let wake: (reason: string) => void = () => {}
  const stopped = new Promise<string>((resolve) => {
    wake = resolve
  })
  const sigint = () => wake('SIGINT')
  const sigterm = () => wake('SIGTERM')
  process.once('SIGINT', sigint)
  process.once('SIGTERM', sigterm)
  let runtime: CairnRuntime | undefined
  let closeHttp: (() => Promise<void>) | undefined
  try {
    runtime = await openCairn(config, logger, components, {
      metrics: createPrometheusMetrics(),
      running: () => running,
    })
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
    const served = await serveHttp(runtime.app, config.http.host, config.http.port, logger)
    closeHttp = () => served.close()
    logger.info({ component: name, mode: config.mode, http: served.url }, `${name} is running`)
    if (options.banner !== undefined) process.stdout.write(`${options.banner(served.url)}\n`)
    const reason = await stopped
    logger.info({ reason }, 'stopping')
  } catch (error) {
    failed ??= error
  } finally {
    running = false
    process.off('SIGINT', sigint)
    process.off('SIGTERM', sigterm)
    await closeHttp?.()
    await runtime?.close()
  }
  if (failed !== undefined) {
    throw failed instanceof Error ? failed : new Error(`${name} failed`, { cause: failed })
  }
  logger.info({ component: name }, 'stopped')
}
