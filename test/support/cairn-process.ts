import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { childEnv } from './child.ts'
import { servingUrlOf } from '../../src/cli/service.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const NODE = path.join(ROOT, 'node_modules', '.bin', 'node')
const MAIN = path.join(ROOT, 'src', 'cli', 'main.ts')

/** The HTTP address from the `<name> is starting` line, logged before it waits for services. */
export const listeningUrlOf = (line: string): string | null => {
  if (!line.startsWith('{')) return null
  try {
    const entry = JSON.parse(line) as { msg?: unknown; http?: unknown }
    return typeof entry.msg === 'string' &&
      entry.msg.endsWith('is starting') &&
      typeof entry.http === 'string'
      ? entry.http
      : null
  } catch {
    return null
  }
}

export type CairnProcess = {
  readonly child: ChildProcess
  /** The URL it serves HTTP on (from its "is running" log line). */
  readonly url: string
  /** Everything it printed so far (for assertion messages). */
  output(): string
  /** Sends a signal and resolves with the exit code (null when killed by a signal). */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | null>
}

/**
 * Runs `cairn <args>` as its own process (the CLI a user runs) and waits until it serves HTTP:
 * by default until it runs (`is running`); with `urlOf` = `listeningUrlOf`, as soon as it listens,
 * while it may still wait for its services. Fails with its output when it exits or does not come
 * up in time.
 */
export const startCairn = (
  args: readonly string[],
  env: Record<string, string>,
  timeoutMs = 60_000,
  urlOf: (line: string) => string | null = servingUrlOf,
): Promise<CairnProcess> =>
  new Promise((resolve, reject) => {
    const child = spawn(NODE, [MAIN, ...args], {
      cwd: ROOT,
      env: childEnv({ PORT: '0', LOG_LEVEL: 'info', ...env }),
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let settled = false
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)))
    const fail = (why: string) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      child.kill('SIGKILL')
      reject(new Error(`cairn ${args.join(' ')}: ${why}\n--- output ---\n${out.slice(-8000)}`))
    }
    const timer = setTimeout(() => fail(`not serving after ${timeoutMs} ms`), timeoutMs)
    const onData = (chunk: Buffer) => {
      out += chunk.toString()
      if (settled) return
      for (const line of out.split('\n')) {
        const url = urlOf(line)
        if (url === null) continue
        settled = true
        clearTimeout(timer)
        resolve({
          child,
          url,
          output: () => out,
          async stop(signal = 'SIGTERM', stopTimeoutMs = 30_000) {
            if (child.exitCode !== null || child.signalCode !== null) return child.exitCode
            child.kill(signal)
            const t = setTimeout(() => child.kill('SIGKILL'), stopTimeoutMs)
            const code = await exited
            clearTimeout(t)
            return code
          },
        })
        return
      }
    }
    child.stdout.on('data', onData)
    child.stderr.on('data', onData)
    child.once('exit', (code, signal) => fail(`exited early (code ${code}, signal ${signal})`))
  })
