import { spawn } from 'node:child_process'
import path from 'node:path'
import { createBenchClient } from '../lib/http-client.ts'
import { closedLoop, rowBetween } from '../lib/harness.ts'
import type { ResultRow } from '../lib/harness.ts'
import { CONCURRENCY, payloads } from '../lib/scenario.ts'
import type { Scenario } from '../lib/scenario.ts'
import { REPO_ROOT } from '../lib/services.ts'

const NODE = path.join(REPO_ROOT, 'node_modules', '.bin', 'node')
const SERVER = path.join(REPO_ROOT, 'bench', 'lib', 'http-layer-server.ts')
const TOKEN = 'bench-http-layer-token-0123456789'
const SERVERS = ['node', 'fastify', 'cairn'] as const

/** A server of `bench/lib/http-layer-server.ts` in its own process, until `stop`. */
const startServer = (
  kind: (typeof SERVERS)[number],
): Promise<{ url: string; pid: number; stop(): Promise<void> }> =>
  new Promise((resolve, reject) => {
    const child = spawn(NODE, [SERVER, kind], {
      cwd: REPO_ROOT,
      env: { ...process.env, BENCH_TOKEN: TOKEN },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const killOnExit = () => child.kill('SIGKILL')
    process.once('exit', killOnExit)
    let out = ''
    const exited = new Promise<void>((r) => child.once('exit', () => r()))
    child.stderr.on('data', (c: Buffer) => (out += c.toString()))
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString()
      const m = /listening (\d+)/.exec(out)
      if (m === null) return
      resolve({
        url: `http://127.0.0.1:${m[1]}`,
        pid: child.pid ?? 0,
        async stop() {
          child.kill('SIGTERM')
          const t = setTimeout(() => child.kill('SIGKILL'), 5_000)
          await exited
          clearTimeout(t)
          process.off('exit', killOnExit)
        },
      })
    })
    void exited.then(() => reject(new Error(`${kind} server exited: ${out.slice(-2000)}`)))
  })

/**
 * What the HTTP layer costs, to judge keeping cairn's own against a framework: the append's route
 * (token checked, path and body validated against the same schemas, a 202 answered) with nothing
 * stored, on node:http alone (a hand check of the body: the floor), on Fastify (its Ajv
 * validation of the same JSON Schemas), and on cairn's pipeline and contract (the OMS's code).
 */
export const httpLayer: Scenario = {
  name: 'http-layer',
  kind: 'baseline',
  summary:
    'the append route with nothing stored (bearer token, path and 1 KiB body validated, 202): node:http with a hand check, Fastify 5 with the same JSON Schemas, cairn’s pipeline; each server in its own process, the typed client, closed loop',
  async run(ctx) {
    const rows: ResultRow[] = []
    const next = payloads(ctx, 31)
    for (const kind of SERVERS) {
      const server = await startServer(kind)
      try {
        for (const c of CONCURRENCY) {
          const client = createBenchClient(server.url, TOKEN, c)
          let n = 0
          const params = { db: 'bench', class_id: 'Item' }
          const r = await closedLoop(ctx, {
            concurrency: c,
            warmupMs: ctx.warmupMs,
            measureMs: ctx.measureMs,
            processes: { server: server.pid },
            op: async () => {
              const answer = await client.createInstance({
                params,
                body: { id: `i-${n++}`, data: { payload: next() } },
              })
              if (answer.status !== 202) throw new Error(`${kind} answered ${answer.status}`)
            },
          }).finally(() => client.close())
          rows.push(
            rowBetween(r.before, r.after, {
              scenario: 'http-layer',
              variant: `${kind} c=${c}`,
              kind: 'baseline',
              events: r.events,
              latency: r.latency,
              ...(kind === 'node' ? {} : { compareTo: [`http-layer node c=${c}`] }),
              notes: ['cpu "server": µs of the server process per request'],
              extra: { errors: r.errors },
            }),
          )
        }
      } finally {
        await server.stop()
      }
    }
    return rows
  },
}
