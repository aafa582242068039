import { createHash } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import {
  createS3Client,
  decodeXmlText,
  s3ErrorCode,
} from '../../src/adapters/object-store/s3/s3-client.ts'
import type { S3Client } from '../../src/adapters/object-store/s3/s3-client.ts'
import type { Sql } from '../../src/core/ports/sql.ts'
import { deleteTopics, listTopicsAndGroups } from '../scenarios/kafka-admin.ts'
import { env } from './services.ts'

/**
 * Something a run created on the services. Scenarios record each one (`ctx.track`) before
 * creating it, so it is removed even when the scenario fails halfway; the harness removes them
 * all after the last scenario (unless `--keep`), so no removal overlaps a measured window. (MinIO
 * still purges deleted objects from its trash in the background, every 5 minutes by default.)
 */
export type Resource =
  | { readonly kind: 'bucket'; readonly name: string }
  | { readonly kind: 'schema'; readonly name: string }
  | { readonly kind: 'database'; readonly name: string }
  | {
      readonly kind: 'topics'
      readonly topics: readonly string[]
      readonly groups: readonly string[]
    }

/** A bucket being emptied reports its progress this often. */
const PROGRESS_MS = 5_000

/** Names the harness gives (`runName`): a bucket, schema, database, topic or group of a bench run. */
const BENCH_BUCKET = /^cairn-bench-/
const BENCH_SCHEMA = /^bench_/
const BENCH_DATABASE = /^cairn_bench_/
const BENCH_TOPIC = /^(cairn-)?bench-/

const s3Client = (): S3Client =>
  createS3Client({
    endpoint: env('CAIRN_S3_ENDPOINT'),
    region: process.env.CAIRN_S3_REGION ?? 'us-east-1',
    credentials: {
      accessKeyId: env('CAIRN_S3_ACCESS_KEY_ID'),
      secretAccessKey: env('CAIRN_S3_SECRET_ACCESS_KEY'),
    },
  })

const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MiB`

type Listed = { readonly objects: { key: string; size: number }[]; readonly truncated: boolean }

const listPage = async (client: S3Client, bucket: string, startAfter?: string): Promise<Listed> => {
  const query: [string, string][] = [
    ['list-type', '2'],
    ['max-keys', '1000'],
  ]
  if (startAfter !== undefined) query.push(['start-after', startAfter])
  const res = await client.request({ method: 'GET', bucket, query })
  if (res.status === 404) return { objects: [], truncated: false }
  if (res.status !== 200) throw new Error(`LIST ${bucket}: ${res.status} ${s3ErrorCode(res.body)}`)
  const xml = res.body.toString('utf8')
  const objects = [...xml.matchAll(/<Contents>([\s\S]*?)<\/Contents>/g)].map((m) => ({
    key: decodeXmlText(/<Key>([\s\S]*?)<\/Key>/.exec(m[1] ?? '')?.[1] ?? ''),
    size: Number(/<Size>(\d+)<\/Size>/.exec(m[1] ?? '')?.[1] ?? 0),
  }))
  return { objects, truncated: /<IsTruncated>true<\/IsTruncated>/.test(xml) }
}

const xmlEscape = (text: string): string => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)

/**
 * Deletes one listed page of objects (up to 1,000) with one multi-object delete request
 * (`POST ?delete`, quiet: the answer lists only the failures); throws on any failure.
 */
const deletePage = async (
  client: S3Client,
  bucket: string,
  keys: readonly string[],
): Promise<void> => {
  const body = Buffer.from(
    `<Delete><Quiet>true</Quiet>${keys.map((k) => `<Object><Key>${xmlEscape(k)}</Key></Object>`).join('')}</Delete>`,
  )
  const res = await client.request({
    method: 'POST',
    bucket,
    query: [['delete', '']],
    headers: {
      'content-md5': createHash('md5').update(body).digest('base64'),
      'content-type': 'application/xml',
    },
    body,
  })
  const failed = res.body.toString('utf8').match(/<Error>[\s\S]*?<\/Error>/)
  if (res.status !== 200 || failed !== null) {
    throw new Error(
      `DELETE ${keys.length} objects of ${bucket}: ${res.status} ${failed?.[0] ?? s3ErrorCode(res.body)}`,
    )
  }
}

/** Deletes every object of `bucket` (a listed page per request), then the bucket; returns what it held. */
const dropBucket = async (
  client: S3Client,
  bucket: string,
  log: (line: string) => void,
): Promise<{ objects: number; bytes: number }> => {
  let objects = 0
  let bytes = 0
  const t0 = Date.now()
  let reported = t0
  let after: string | undefined
  for (;;) {
    const page = await listPage(client, bucket, after)
    if (page.objects.length > 0) {
      await deletePage(
        client,
        bucket,
        page.objects.map((o) => o.key),
      )
    }
    objects += page.objects.length
    for (const o of page.objects) bytes += o.size
    if (Date.now() - reported >= PROGRESS_MS) {
      reported = Date.now()
      const rate = Math.round(objects / ((reported - t0) / 1000))
      log(`  ${bucket}: ${objects} objects (${mib(bytes)}) deleted so far, ${rate}/s`)
    }
    after = page.objects.at(-1)?.key
    if (!page.truncated || after === undefined) break
  }
  const res = await client.request({ method: 'DELETE', bucket })
  if (res.status !== 204 && res.status !== 200 && res.status !== 404)
    throw new Error(`DELETE bucket ${bucket}: ${res.status} ${s3ErrorCode(res.body)}`)
  return { objects, bytes }
}

const schemaBytes = async (sql: Sql, schema: string): Promise<number> => {
  const [row] = await sql.query<{ bytes: string | null }>(
    `SELECT sum(pg_total_relation_size(c.oid)) AS bytes FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind IN ('r', 'm')`,
    [schema],
  )
  return Number(row?.bytes ?? 0)
}

const databaseBytes = async (sql: Sql, database: string): Promise<number> => {
  const [row] = await sql.query<{ bytes: string | null }>(
    'SELECT pg_database_size(datname) AS bytes FROM pg_database WHERE datname = $1',
    [database],
  )
  return Number(row?.bytes ?? 0)
}

/** Identifiers the harness makes are lower-case letters, digits and `_`; anything else is refused. */
const identifier = (name: string): string => {
  if (!/^[a-z0-9_]+$/.test(name)) throw new Error(`not a bench identifier: ${name}`)
  return name
}

const dropSchema = async (sql: Sql, schema: string): Promise<number> => {
  const bytes = await schemaBytes(sql, schema)
  await sql.exec(`DROP SCHEMA IF EXISTS ${identifier(schema)} CASCADE`)
  return bytes
}

const dropDatabase = async (sql: Sql, database: string): Promise<number> => {
  const bytes = await databaseBytes(sql, database)
  await sql.exec(`DROP DATABASE IF EXISTS ${identifier(database)} WITH (FORCE)`)
  return bytes
}

/**
 * Removes the resources, each on its own: one that fails is reported and the others are still
 * removed. Returns how many failed.
 */
export const removeResources = async (
  resources: readonly Resource[],
  sql: Sql,
  log: (line: string) => void,
): Promise<number> => {
  let failed = 0
  const attempt = async (what: string, fn: () => Promise<string>): Promise<void> => {
    try {
      log(`  removed ${what}${await fn()}`)
    } catch (error) {
      failed++
      log(`  could not remove ${what}: ${error instanceof Error ? error.message : String(error)}`)
    }
  }
  const client = s3Client()
  try {
    for (const r of resources) {
      switch (r.kind) {
        case 'bucket':
          await attempt(`bucket ${r.name}`, async () => {
            const { objects, bytes } = await dropBucket(client, r.name, log)
            return ` (${objects} objects, ${mib(bytes)})`
          })
          break
        case 'schema':
          await attempt(`schema ${r.name}`, async () => ` (${mib(await dropSchema(sql, r.name))})`)
          break
        case 'database':
          await attempt(`database ${r.name}`, async () => {
            return ` (${mib(await dropDatabase(sql, r.name))})`
          })
          break
        case 'topics':
          await attempt(`topics ${r.topics.join(', ')}`, async () => {
            const { topics, groups } = await deleteTopics(r.topics, r.groups)
            return ` (${topics} topics and ${groups} consumer groups existed)`
          })
          break
      }
    }
  } finally {
    client.close()
  }
  return failed
}

/** What `describe` shows of a resource, for `--keep`. */
export const describeResource = (r: Resource): string =>
  r.kind === 'topics' ? `topics ${r.topics.join(', ')}` : `${r.kind} ${r.name}`

/** When the run named by `name`'s run id (`Date.now()` in base 36, see `runName`) started, if any. */
const runStartedAt = (name: string): number | undefined => {
  const now = Date.now()
  let found: number | undefined
  for (const token of name.split(/[-_.]/)) {
    if (!/^[0-9a-z]{8}$/.test(token)) continue
    const t = parseInt(token, 36)
    if (t >= Date.UTC(2024, 0, 1) && t <= now + 86_400_000) found = t
  }
  return found
}

/**
 * Start times (ms since the epoch) of the other bench harness processes on this machine. A
 * resource whose run id is not older than the oldest of them may belong to a run in progress.
 */
const otherBenchRuns = async (): Promise<{ pid: number; startedAt: number }[]> => {
  const stat = await readFile('/proc/stat', 'utf8')
  const bootSeconds = Number(/^btime (\d+)$/m.exec(stat)?.[1] ?? 0)
  const runs: { pid: number; startedAt: number }[] = []
  for (const entry of await readdir('/proc')) {
    const pid = Number(entry)
    if (!Number.isInteger(pid) || pid === process.pid) continue
    try {
      const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0')
      if (!argv.some((a) => a.endsWith('bench/main.ts'))) continue
      const text = await readFile(`/proc/${pid}/stat`, 'utf8')
      // Field 22 (starttime, in clock ticks of 1/100 s after boot); fields from 3 follow the ')'.
      const ticks = Number(text.slice(text.lastIndexOf(')') + 2).split(' ')[22 - 3] ?? 0)
      runs.push({ pid, startedAt: bootSeconds * 1000 + ticks * 10 })
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return runs
}

/**
 * Removes what earlier runs left behind (a run that was killed, or one with `--keep`): buckets
 * `cairn-bench-*`, schemas `bench_*`, databases `cairn_bench_*`, topics and consumer groups
 * `bench-*` / `cairn-bench-*`. Anything that may belong to a bench run still in progress on this
 * machine (its run id is not older than that run's process) is left alone.
 */
export const sweepLeftovers = async (sql: Sql, log: (line: string) => void): Promise<void> => {
  const live = await otherBenchRuns()
  // The run id is taken after the process started; 2 s covers the clocks' granularity.
  const cutoff = Math.min(...live.map((r) => r.startedAt - 2_000))
  const skipped: string[] = []
  const orphaned = (name: string): boolean => {
    const t = runStartedAt(name)
    const ok = live.length === 0 || (t !== undefined && t < cutoff)
    if (!ok) skipped.push(name)
    return ok
  }

  const client = s3Client()
  const res = await client
    .request({ method: 'GET', bucket: '' }) // GET / on the endpoint: ListBuckets
    .finally(() => client.close())
  if (res.status !== 200) throw new Error(`ListBuckets: ${res.status} ${s3ErrorCode(res.body)}`)
  const buckets = [...res.body.toString('utf8').matchAll(/<Bucket>[\s\S]*?<Name>([^<]*)<\/Name>/g)]
    .map((m) => decodeXmlText(m[1] ?? ''))
    .filter((b) => BENCH_BUCKET.test(b) && orphaned(b))

  const schemas = (
    await sql.query<{ name: string }>('SELECT nspname AS name FROM pg_namespace ORDER BY 1')
  )
    .map((r) => r.name)
    .filter((s) => BENCH_SCHEMA.test(s) && orphaned(s))
  const databases = (
    await sql.query<{ name: string }>('SELECT datname AS name FROM pg_database ORDER BY 1')
  )
    .map((r) => r.name)
    .filter((d) => BENCH_DATABASE.test(d) && orphaned(d))

  const kafka = await listTopicsAndGroups()
  const topics = kafka.topics.filter((t) => BENCH_TOPIC.test(t) && orphaned(t))
  const groups = kafka.groups.filter((g) => BENCH_TOPIC.test(g) && orphaned(g))

  const resources: Resource[] = [
    ...buckets.map((name) => ({ kind: 'bucket' as const, name })),
    ...schemas.map((name) => ({ kind: 'schema' as const, name })),
    ...databases.map((name) => ({ kind: 'database' as const, name })),
    ...(topics.length + groups.length > 0 ? [{ kind: 'topics' as const, topics, groups }] : []),
  ]
  if (skipped.length > 0) {
    log(
      `leftovers: ${skipped.length} names may belong to the bench run in progress (pid ${live.map((r) => r.pid).join(', ')}), kept: ${skipped.join(', ')}`,
    )
  }
  if (resources.length === 0) {
    log('leftovers of earlier runs: none')
    return
  }
  log(`leftovers of earlier runs: removing ${resources.length}`)
  const t0 = Date.now()
  const failed = await removeResources(resources, sql, log)
  log(
    `leftovers removed in ${((Date.now() - t0) / 1000).toFixed(1)} s${failed > 0 ? ` (${failed} failed)` : ''}`,
  )
}
