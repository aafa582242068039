import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { childEnv } from './child.ts'

/**
 * A helper process a test spawns (a worker to kill, say): its stdout JSON lines are kept for
 * `waitFor`, its stderr for `output()`, which a failing test prints so that a hang shows its cause.
 * Every wait has a hard timeout.
 */
export type TestChild = {
  readonly name: string
  readonly proc: ChildProcess
  /** Resolves with the first stdout JSON line (seen or to come) that `match` accepts. */
  waitFor(
    match: (line: Record<string, unknown>) => boolean,
    what: string,
    timeoutMs: number,
  ): Promise<Record<string, unknown>>
  /** SIGKILL; resolves once the process is gone. */
  kill(): Promise<void>
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code (null when killed). */
  stop(graceMs?: number): Promise<number | null>
  /** The last stderr lines (and unparsed stdout), for a failure message. */
  output(lines?: number): string
}

export const spawnChild = (
  name: string,
  script: string,
  env: Record<string, string>,
): TestChild => {
  const proc = spawn(process.execPath, [script], {
    env: childEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const seen: Record<string, unknown>[] = []
  const text: string[] = []
  const waiters = new Set<() => void>()
  let exit: { code: number | null; signal: string | null } | undefined
  const exited = new Promise<void>((resolve) => {
    proc.once('exit', (code, signal) => {
      exit = { code, signal }
      for (const w of waiters) w()
      resolve()
    })
  })
  createInterface({ input: proc.stdout }).on('line', (line) => {
    try {
      seen.push(JSON.parse(line) as Record<string, unknown>)
    } catch {
      text.push(`[stdout] ${line}`)
    }
    for (const w of waiters) w()
  })
  createInterface({ input: proc.stderr }).on('line', (line) => {
    text.push(line)
    if (text.length > 2_000) text.splice(0, 1_000)
  })

  const child: TestChild = {
    name,
    proc,
    waitFor: (match, what, timeoutMs) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(check)
          reject(new Error(`${name}: timed out after ${timeoutMs} ms waiting for ${what}`))
        }, timeoutMs)
        const check = (): void => {
          const found = seen.find(match)
          const fail = (why: string): void => {
            waiters.delete(check)
            clearTimeout(timer)
            reject(new Error(`${name}: ${why} while waiting for ${what}`))
          }
          if (found !== undefined) {
            waiters.delete(check)
            clearTimeout(timer)
            resolve(found)
          } else if (exit !== undefined) {
            fail(`exited (code ${String(exit.code)}, signal ${String(exit.signal)})`)
          }
        }
        waiters.add(check)
        check()
      }),
    async kill() {
      if (exit === undefined) proc.kill('SIGKILL')
      await exited
    },
    async stop(graceMs = 15_000) {
      if (exit === undefined) {
        proc.kill('SIGTERM')
        const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs)
        await exited
        clearTimeout(timer)
      }
      return exit?.code ?? null
    },
    output: (lines = 60) =>
      `--- ${name} (pid ${String(proc.pid)}) ---\n${text.slice(-lines).join('\n')}`,
  }
  return child
}

/** Runs `fn`; if it throws, the error carries the children's last output lines. */
export const withChildOutput = async <T>(
  children: readonly TestChild[],
  fn: () => Promise<T>,
): Promise<T> => {
  try {
    return await fn()
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error)
    throw new Error(`${message}\n${children.map((c) => c.output()).join('\n')}`, { cause: error })
  } finally {
    await Promise.all(children.map((c) => c.kill()))
  }
}
