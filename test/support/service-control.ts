import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

/**
 * Outages of the real services of `scripts/services.sh`, for serial tests only (they affect every
 * test using the service): freeze (SIGSTOP, the server keeps its connections and answers nothing)
 * and stop (the server goes away). Each undoes itself in `restoreAll`, whatever happened.
 */
const run = promisify(execFile)
const SERVICES = fileURLToPath(new URL('../../scripts/services.sh', import.meta.url))

export type Service = 'postgres' | 'kafka' | 'minio'

const frozen = new Set<number>()
const stopped = new Set<Service>()

/** The pids of a service: its main process and, for PostgreSQL, every backend it forked. */
export const pidsOf = async (svc: Service): Promise<number[]> => {
  const out = await run('bash', [SERVICES, 'status', svc]).then(
    (r) => r.stdout,
    (error: { stdout?: string }) => error.stdout ?? '',
  )
  const main = /pid (\d+)/.exec(out)?.[1]
  assert.ok(main !== undefined, `no pid for ${svc}: ${out}`)
  const children = await run('ps', ['-o', 'pid=', '--ppid', main]).then(
    (r) => r.stdout.split('\n').map((s) => Number(s.trim())),
    () => [],
  )
  return [Number(main), ...children.filter((p) => p > 0)]
}

const signal = (pids: Iterable<number>, sig: NodeJS.Signals): void => {
  for (const pid of pids) {
    try {
      process.kill(pid, sig)
    } catch {
      // Gone meanwhile (a backend that ended).
    }
  }
}

/** Freezes the service (SIGSTOP); the returned function thaws it (SIGCONT). */
export const freeze = async (svc: Service): Promise<() => Promise<void>> => {
  const pids = await pidsOf(svc)
  for (const pid of pids) frozen.add(pid)
  signal(pids, 'SIGSTOP')
  return async () => {
    signal(pids, 'SIGCONT')
    for (const pid of pids) frozen.delete(pid)
    await Promise.resolve()
  }
}

/** Stops the service; the returned function starts it again and waits until it answers. */
export const stop = async (svc: Service): Promise<() => Promise<void>> => {
  stopped.add(svc)
  await run('bash', [SERVICES, 'down', svc])
  return async () => {
    await run('bash', [SERVICES, 'up', svc])
    stopped.delete(svc)
  }
}

/** Thaws and starts again whatever this process froze or stopped (for `finally` and `after`). */
export const restoreAll = async (): Promise<void> => {
  signal(frozen, 'SIGCONT')
  frozen.clear()
  for (const svc of [...stopped]) {
    await run('bash', [SERVICES, 'up', svc])
    stopped.delete(svc)
  }
}
