// The benchmark harness of issue 7: `npm run bench [-- --quick] [-- --only a,b]`.
// Provisions the real services, runs the baselines and the scenarios with fixed seeds, prints a
// table and writes bench/results/<timestamp>.json and bench/results/latest.json. Removes the
// buckets, schemas, databases and topics it creates (and those earlier runs left) unless --keep.
import { mkdir, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import type { Logger } from '../src/core/ports/logger.ts'
import { describeResource, removeResources, sweepLeftovers } from './lib/cleanup.ts'
import type { Resource } from './lib/cleanup.ts'
import type { BenchContext, ResultRow } from './lib/harness.ts'
import { computeCosts, computeRatios, describeMachine, formatTable } from './lib/report.ts'
import { pgSql } from './lib/scenario.ts'
import type { Scenario } from './lib/scenario.ts'
import { provisionServices, REPO_ROOT, servicePids } from './lib/services.ts'
import { append } from './scenarios/append.ts'
import { appendLib } from './scenarios/append-lib.ts'
import { claimDone } from './scenarios/claim-done.ts'
import { coldAggregate } from './scenarios/cold-aggregate.ts'
import { consume } from './scenarios/consume.ts'
import { e2e } from './scenarios/e2e.ts'
import { emmett } from './scenarios/emmett.ts'
import { history } from './scenarios/history.ts'
import { httpLayer } from './scenarios/http-layer.ts'
import { idle } from './scenarios/idle.ts'
import { kafkaProduce } from './scenarios/kafka-produce.ts'
import { pgInsert } from './scenarios/pg-insert.ts'
import { publish } from './scenarios/publish.ts'
import { rawPut } from './scenarios/raw-put.ts'

/** In run order: the baselines first, so that a scenario can size its load from them. */
const SCENARIOS: readonly Scenario[] = [
  rawPut,
  kafkaProduce,
  pgInsert,
  claimDone,
  emmett,
  httpLayer,
  appendLib,
  append,
  publish,
  consume,
  e2e,
  idle,
  history,
  coldAggregate,
]

const USAGE = `usage: npm run bench -- [--quick] [--only <name,...>] [--seed <n>] [--keep]
  --quick   short warm-up and windows, smaller backlog: a smoke check in under 3 minutes
  --only    run only these (${SCENARIOS.map((s) => s.name).join(', ')})
  --seed    seed of the aggregate picks and payloads (default 7)
  --keep    keep the buckets, schemas, databases and topics of this run (and of earlier runs)
            for inspection; by default the run removes its own after the last scenario, and
            at start those earlier runs left behind
  --cpu-prof  write a V8 CPU profile of every cairn process spawned (bench/results/profiles/);
            summarise one with: node bench/profile-summary.ts <file.cpuprofile>`

const stderrLogger = (bindings: Record<string, unknown> = {}): Logger => {
  const write =
    (level: string) =>
    (fields: Record<string, unknown>, message: string): void => {
      process.stderr.write(`${JSON.stringify({ level, message, ...bindings, ...fields })}\n`)
    }
  const noop = (): void => {}
  return {
    debug: noop,
    info: noop,
    warn: write('warn'),
    error: write('error'),
    child: (more) => stderrLogger({ ...bindings, ...more }),
  }
}

const main = async (): Promise<number> => {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      seed: { type: 'string', default: '7' },
      help: { type: 'boolean', default: false },
      'cpu-prof': { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
    },
  })
  if (values.help) {
    console.log(USAGE)
    return 0
  }
  const only = values.only
    ?.split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
  const unknown = only?.filter((n) => !SCENARIOS.some((s) => s.name === n)) ?? []
  if (unknown.length > 0) {
    console.error(`unknown scenario: ${unknown.join(', ')}\n${USAGE}`)
    return 2
  }
  const chosen = SCENARIOS.filter((s) => only === undefined || only.includes(s.name))
  if (values['cpu-prof']) {
    // Inherited by the cairn processes the scenarios spawn; each writes its profile at exit.
    const dir = path.join(REPO_ROOT, 'bench', 'results', 'profiles')
    process.env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} --cpu-prof --cpu-prof-dir=${dir}`
    console.error(`[bench] CPU profiles of spawned cairn processes go to ${dir}`)
  }
  const quick = values.quick
  const log = (line: string): void => {
    process.stderr.write(`[bench] ${line}\n`)
  }
  const loadAtStart = os.loadavg().map((n) => Math.round(n * 100) / 100)
  const started = new Date()
  const services = await provisionServices(log)
  const created: Resource[] = []
  const rows: ResultRow[] = []
  const ctx: BenchContext = {
    quick,
    seed: Number(values.seed),
    runId: Date.now().toString(36),
    warmupMs: quick ? 1_000 : 5_000,
    measureMs: quick ? 4_000 : 20_000,
    aggregates: 10_000,
    payloadBytes: 1024,
    pids: await servicePids(),
    logger: stderrLogger(),
    rows,
    log,
    track: (resource) => created.push(resource),
  }
  let failed = 0
  try {
    if (!values.keep) {
      const sql = pgSql(ctx, 'cleanup')
      try {
        await sweepLeftovers(sql, log)
      } catch (error) {
        log(`removing leftovers of earlier runs failed: ${String(error)}`)
      } finally {
        await sql.close()
      }
    }
    for (const s of chosen) {
      const t = Date.now()
      log(`${s.name}: ${s.summary}`)
      try {
        const result = await s.run(ctx)
        rows.push(...result)
        for (const r of result) {
          log(
            `  ${r.variant}: ${r.throughput} events/s` +
              (r.latency === null ? '' : `, p50 ${r.latency.p50} ms, p99 ${r.latency.p99} ms`),
          )
        }
      } catch (error) {
        failed++
        log(`  FAILED: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`)
      }
      log(`  (${((Date.now() - t) / 1000).toFixed(1)} s)`)
    }
  } finally {
    // After the last measurement, so that no removal overlaps a measured window of this run.
    if (values.keep) {
      log(`--keep: kept ${created.map(describeResource).join('; ') || 'nothing'}`)
    } else if (created.length > 0) {
      const t = Date.now()
      log(`removing what this run created (${created.length})`)
      const sql = pgSql(ctx, 'cleanup')
      try {
        const failures = await removeResources(created.reverse(), sql, log)
        if (failures > 0) failed++
      } finally {
        await sql.close()
      }
      log(`  (${((Date.now() - t) / 1000).toFixed(1)} s, not part of any measurement)`)
    }
    await services.stop()
  }
  computeRatios(rows)
  computeCosts(rows)
  const table = formatTable(rows)
  console.log(table)
  const finished = new Date()
  const result = {
    startedAt: started.toISOString(),
    finishedAt: finished.toISOString(),
    durationSeconds: Math.round((finished.getTime() - started.getTime()) / 1000),
    mode: quick ? 'quick' : 'full',
    kept: values.keep ? created : [],
    seed: ctx.seed,
    settings: {
      warmupMs: ctx.warmupMs,
      measureMs: ctx.measureMs,
      aggregates: ctx.aggregates,
      payloadBytes: ctx.payloadBytes,
    },
    machine: { ...describeMachine(loadAtStart), loadAverageAtEnd: os.loadavg() },
    scenarios: Object.fromEntries(
      chosen.map((s) => [s.name, { kind: s.kind, summary: s.summary }]),
    ),
    rows,
    table,
  }
  const dir = path.join(REPO_ROOT, 'bench', 'results')
  await mkdir(dir, { recursive: true })
  const json = `${JSON.stringify(result, null, 2)}\n`
  const file = path.join(dir, `${started.toISOString().replace(/[:.]/g, '-')}.json`)
  await writeFile(file, json)
  await writeFile(path.join(dir, 'latest.json'), json)
  log(`wrote ${path.relative(REPO_ROOT, file)} and bench/results/latest.json`)
  return failed === 0 ? 0 : 1
}

process.exitCode = await main()
