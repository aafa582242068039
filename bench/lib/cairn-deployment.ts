import { spawn } from 'node:child_process'
import path from 'node:path'
import { domainTopics } from '../../src/config/runtime.ts'
import { servingUrlOf } from '../../src/cli/service.ts'
import { listAll } from '../../src/core/ports/object-store.ts'
import type { ObjectStore } from '../../src/core/ports/object-store.ts'
import { GROUPS } from '../../src/domain/model.ts'
import { BY_DATE_PREFIX } from '../../src/event-store/keys.ts'
import type { BenchContext, ProcessPids } from './harness.ts'
import type { CairnClient } from '../../src/client/index.ts'
import { databaseUrl, kafkaBrokers, runName } from './scenario.ts'
import { env, REPO_ROOT } from './services.ts'

const NODE = path.join(REPO_ROOT, 'node_modules', '.bin', 'node')
const MAIN = path.join(REPO_ROOT, 'src', 'cli', 'main.ts')

/** A `cairn <command>` process this run spawned. */
export type CairnProcess = {
  readonly name: string
  readonly pid: number
  /** The URL it serves HTTP on (from its "is running" log line). */
  readonly url: string
  /** The tail of what it printed (for error messages). */
  output(): string
  /** SIGTERM, then SIGKILL after `deadlineMs`; resolves with the exit code once it is gone. */
  stop(deadlineMs?: number): Promise<number | null>
}

/**
 * Runs `cairn <args>` (the CLI an operator runs) and waits until it serves HTTP. If it exits or
 * does not come up within `timeoutMs` it is killed and the promise fails with its output. It is
 * killed too if this process exits without stopping it.
 */
export const startCairnProcess = (
  name: string,
  args: readonly string[],
  childEnv: Readonly<Record<string, string>>,
  timeoutMs = 60_000,
): Promise<CairnProcess> =>
  new Promise((resolve, reject) => {
    const child = spawn(NODE, [MAIN, ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, PORT: '0', LOG_LEVEL: 'info', ...childEnv },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const killOnExit = (): void => {
      child.kill('SIGKILL')
    }
    process.once('exit', killOnExit)
    let out = ''
    let settled = false
    const exited = new Promise<number | null>((r) =>
      child.once('exit', (code) => {
        process.off('exit', killOnExit)
        r(code)
      }),
    )
    const gone = (): boolean => child.exitCode !== null || child.signalCode !== null
    const stop = async (deadlineMs = 15_000): Promise<number | null> => {
      if (gone()) return child.exitCode
      child.kill('SIGTERM')
      const t = setTimeout(() => child.kill('SIGKILL'), deadlineMs)
      const code = await exited
      clearTimeout(t)
      return code
    }
    const fail = (why: string): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      child.kill('SIGKILL')
      reject(new Error(`cairn ${args.join(' ')}: ${why}\n--- output ---\n${out.slice(-4000)}`))
    }
    const timer = setTimeout(() => fail(`not serving after ${timeoutMs} ms`), timeoutMs)
    const onData = (chunk: Buffer): void => {
      // Keep a bounded tail: a process that runs for minutes must not grow this without end.
      out = (out + chunk.toString()).slice(-64_000)
      if (settled) return
      for (const line of out.split('\n')) {
        const url = servingUrlOf(line)
        if (url === null) continue
        settled = true
        clearTimeout(timer)
        resolve({ name, pid: child.pid ?? 0, url, output: () => out, stop })
        return
      }
    }
    child.stdout.on('data', onData)
    child.stderr.on('data', onData)
    child.once('exit', (code, signal) => fail(`exited early (code ${code}, signal ${signal})`))
  })

/** A distributed deployment of this run: its own bucket, schema and topic prefix. */
export type Deployment = {
  readonly bucket: string
  readonly schema: string
  readonly token: string
  /** Starts `cairn <args>` as `name` in this deployment (distributed mode). */
  start(name: string, args: readonly string[]): Promise<CairnProcess>
  /** Stops the named processes (SIGTERM, SIGKILL after a deadline). */
  stop(...names: string[]): Promise<void>
  /** name → pid of the running processes, for their CPU. */
  pids(): ProcessPids
  /** Stops every process; the bucket, schema, topics and groups are removed at the end of the run. */
  close(): Promise<void>
}

export const openDeployment = (ctx: BenchContext, stem: string): Deployment => {
  const bucket = runName(ctx, `cairn-bench-${stem}`)
  const schema = runName(ctx, `bench_${stem}`, '_')
  const prefix = `${runName(ctx, `bench-${stem}`)}.`
  const token = `bench-token-${ctx.runId}-0123456789`
  const deploymentEnv: Record<string, string> = {
    CAIRN_MODE: 'distributed',
    CAIRN_S3_ENDPOINT: env('CAIRN_S3_ENDPOINT'),
    CAIRN_S3_REGION: process.env.CAIRN_S3_REGION ?? 'us-east-1',
    CAIRN_S3_ACCESS_KEY_ID: env('CAIRN_S3_ACCESS_KEY_ID'),
    CAIRN_S3_SECRET_ACCESS_KEY: env('CAIRN_S3_SECRET_ACCESS_KEY'),
    CAIRN_DATABASE_URL: databaseUrl(),
    CAIRN_KAFKA_BROKERS: kafkaBrokers().join(','),
    CAIRN_KAFKA_TOPIC_PREFIX: prefix,
    EVENT_STORE_BUCKET: bucket,
    EVENT_STORE_SEQUENCE_SCHEMA: schema,
    OMS_API_TOKENS: token,
  }
  ctx.track({ kind: 'bucket', name: bucket })
  ctx.track({ kind: 'schema', name: schema })
  ctx.track({
    kind: 'topics',
    topics: [...domainTopics(prefix), `${prefix}cairn-events`],
    groups: Object.values(GROUPS).map((g) => prefix + g),
  })
  const running = new Map<string, CairnProcess>()
  // Starts still in flight when another one fails: close() waits for them, so none is left behind.
  const starting = new Set<Promise<unknown>>()
  return {
    bucket,
    schema,
    token,
    async start(name, args) {
      const started = startCairnProcess(name, args, {
        ...deploymentEnv,
        CAIRN_MEMBER_NAME: `${name}-${ctx.runId}`,
      })
      const settled = started.then(
        (p) => running.set(name, p),
        () => undefined,
      )
      starting.add(settled)
      await settled
      starting.delete(settled)
      return started
    },
    async stop(...names) {
      await Promise.all(
        names.map(async (name) => {
          const p = running.get(name)
          if (p === undefined) return
          running.delete(name)
          const code = await p.stop()
          if (code !== 0) ctx.log(`  ${name} exited with ${code}: ${p.output().slice(-1000)}`)
        }),
      )
    },
    pids: () => Object.fromEntries([...running].map(([name, p]) => [name, p.pid])),
    async close() {
      await Promise.all(starting)
      await this.stop(...running.keys())
    },
  }
}

/** Waits for a command to be COMPLETED (long polls); fails on FAILED or after `timeoutMs`. */
export const settleCommand = async (
  client: CairnClient,
  commandId: string,
  timeoutMs = 60_000,
): Promise<void> => {
  const status = await client.waitForCommand(commandId, { timeoutMs })
  if (status.status !== 'COMPLETED') {
    throw new Error(`command ${commandId}: ${JSON.stringify(status)}`)
  }
}

/** Where a bench class's instances are created: the path parameters of `createInstance`. */
export type BenchClass = { readonly db: string; readonly class_id: string }

/**
 * A database and a class with one string property (`payload`), both COMPLETED (needs the
 * publisher, the ontology worker and the projection running).
 */
export const createBenchClass = async (
  client: CairnClient,
  db: string,
  classId: string,
): Promise<BenchClass> => {
  const created = await client.createDatabase({ body: { name: db } })
  await settleCommand(client, created.body.command_id)
  const cls = await client.createClass({
    params: { db },
    body: { id: classId, properties: [{ name: 'payload', type: 'string', required: true }] },
  })
  await settleCommand(client, cls.body.command_id)
  return { db, class_id: classId }
}

/** Objects a writer creates (segments under indexes/by-date/): create-only PUTs that succeeded. */
export const countWrittenObjects = async (store: ObjectStore): Promise<number> => {
  let n = 0
  for await (const key of listAll(store, BY_DATE_PREFIX)) if (key !== '') n++
  return n
}
