import { execFile } from 'node:child_process'
import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

export const REPO_ROOT = path.resolve(import.meta.dirname, '..', '..')
const SERVICES_SH = path.join(REPO_ROOT, 'scripts', 'services.sh')

export type Services = {
  /** True when this run started the services (and so stops them at the end). */
  readonly startedHere: boolean
  stop(): Promise<void>
}

/**
 * Provisions the real services the way `scripts/test.sh all` does: `services.sh up` (idempotent),
 * then its `env` output into `process.env`. Stops them at the end only if they were not running.
 */
export const provisionServices = async (log: (line: string) => void): Promise<Services> => {
  const running = await run('bash', [SERVICES_SH, 'status']).then(
    () => true,
    () => false,
  )
  if (!running) {
    log('services are not all up: starting them (scripts/services.sh up)')
    await run('bash', [SERVICES_SH, 'up'], { maxBuffer: 64 * 1024 * 1024 })
  }
  const { stdout } = await run('bash', [SERVICES_SH, 'env'])
  for (const line of stdout.split('\n')) {
    const m = /^export ([A-Z0-9_]+)=(.*)$/.exec(line.trim())
    if (m?.[1] !== undefined && m[2] !== undefined)
      process.env[m[1]] = m[2].replace(/^'(.*)'$/, '$1')
  }
  const startedHere = !running && process.env.CAIRN_KEEP_SERVICES !== '1'
  return {
    startedHere,
    async stop() {
      if (startedHere) await run('bash', [SERVICES_SH, 'down'])
    },
  }
}

export const env = (name: string): string => {
  const value = process.env[name]
  if (value === undefined || value === '') throw new Error(`${name} is not set (services.sh env)`)
  return value
}

export const SERVICE_NAMES = ['postgres', 'kafka', 'minio'] as const
export type ServiceName = (typeof SERVICE_NAMES)[number]

/** The pids of this checkout's PostgreSQL postmaster, Kafka JVM and MinIO server. */
export const servicePids = async (): Promise<Partial<Record<ServiceName, number>>> => {
  const dir = path.join(REPO_ROOT, '.services')
  const first = async (file: string): Promise<number | undefined> => {
    try {
      const n = Number((await readFile(file, 'utf8')).split('\n')[0])
      return Number.isInteger(n) && n > 0 ? n : undefined
    } catch {
      return undefined
    }
  }
  const pids: Partial<Record<ServiceName, number>> = {}
  const pg = await first(path.join(dir, 'postgres', 'data', 'postmaster.pid'))
  if (pg !== undefined) pids.postgres = pg
  const kafka = await first(path.join(dir, 'kafka', 'kafka.pid'))
  if (kafka !== undefined) pids.kafka = kafka
  const minio = await first(path.join(dir, 'minio', 'minio.pid'))
  if (minio !== undefined) pids.minio = minio
  return pids
}

// /proc/<pid>/stat counts CPU in clock ticks; Linux reports USER_HZ = 100 to user space.
const TICK_US = 10_000

type ProcStat = { readonly ppid: number; readonly ticks: number }

const readStat = async (pid: number): Promise<ProcStat | undefined> => {
  try {
    const text = await readFile(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    const f = text.slice(text.lastIndexOf(')') + 2).split(' ')
    const num = (i: number): number => Number(f[i - 3] ?? 0)
    // utime + stime + cutime + cstime: the process and its children it has reaped.
    return { ppid: num(4), ticks: num(14) + num(15) + num(16) + num(17) }
  } catch {
    return undefined
  }
}

/**
 * CPU time (µs) of each service: the process, its live children (PostgreSQL's backends and
 * auxiliary processes) and the children it reaped. A delta of two samples is the CPU spent in
 * between, also by backends that came and went. It includes work other clients of the same
 * servers caused meanwhile.
 */
export const sampleServiceCpu = async (
  pids: Partial<Record<ServiceName, number>>,
): Promise<Partial<Record<ServiceName, number>>> => {
  const all = new Map<number, ProcStat>()
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    const s = await readStat(Number(entry))
    if (s !== undefined) all.set(Number(entry), s)
  }
  const out: Partial<Record<ServiceName, number>> = {}
  for (const name of SERVICE_NAMES) {
    const pid = pids[name]
    if (pid === undefined) continue
    let ticks = all.get(pid)?.ticks ?? 0
    for (const s of all.values()) if (s.ppid === pid) ticks += s.ticks
    out[name] = ticks * TICK_US
  }
  return out
}

/**
 * CPU time (µs) of single processes (name → pid), e.g. the cairn processes a scenario spawned: the
 * process and the children it reaped. A process that is gone reads as absent.
 */
export const sampleProcessCpu = async (
  pids: Readonly<Record<string, number>>,
): Promise<Record<string, number>> => {
  const out: Record<string, number> = {}
  for (const [name, pid] of Object.entries(pids)) {
    const s = await readStat(pid)
    if (s !== undefined) out[name] = s.ticks * TICK_US
  }
  return out
}

/**
 * The S3 request counters of a MinIO metrics page (`minio_api_requests_total{name="PutObject",
 * type="s3"} 42`) by API name in lower case, summed over servers; other series are ignored.
 */
export const parseMinioRequests = (text: string): Record<string, number> => {
  const out: Record<string, number> = {}
  for (const m of text.matchAll(/^minio_api_requests_total\{([^}]*)\} (\S+)$/gm)) {
    const labels = m[1] ?? ''
    const api = /(?:^|,)name="([^"]+)"/.exec(labels)?.[1]?.toLowerCase()
    const n = Number(m[2])
    if (api === undefined || !/(?:^|,)type="s3"/.test(labels) || !Number.isFinite(n)) continue
    out[api] = (out[api] ?? 0) + n
  }
  return out
}

/**
 * MinIO's own count of S3 requests by API (`putobject`, `getobject`, `listobjectsv2`…) since it
 * started, from its Prometheus endpoint (`services.sh` starts it with public metrics; it listens
 * on 127.0.0.1 only). Every client's requests, cairn processes of their own included; `null` when
 * the endpoint does not answer (a MinIO started without public metrics, another S3 server).
 */
export const sampleMinioRequests = async (
  endpoint: string | undefined,
): Promise<Record<string, number> | null> => {
  if (endpoint === undefined || endpoint === '') return null
  try {
    // The v3 endpoint counts at once (v2's cluster metrics are cached for several seconds).
    const response = await fetch(new URL('/minio/metrics/v3/api/requests', endpoint), {
      signal: AbortSignal.timeout(2_000),
    })
    if (!response.ok) return null
    return parseMinioRequests(await response.text())
  } catch {
    return null
  }
}
