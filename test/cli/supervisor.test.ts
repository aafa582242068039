import assert from 'node:assert/strict'
import { execFile, spawn } from 'node:child_process'
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { childEnv } from '../support/child.ts'

/**
 * The systemd units of deploy/systemd (docs/operations.md) and what a supervisor relies on: the
 * units are valid for systemd (checked with `systemd-analyze verify` where it is installed), run
 * the CLI's commands, restart whatever the exit; a process that cannot go on exits 1 promptly with
 * its reason.
 */
const run = promisify(execFile)
const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const UNITS = path.join(ROOT, 'deploy', 'systemd')
const NODE = path.join(ROOT, 'node_modules', '.bin', 'node')
const MAIN = path.join(ROOT, 'src', 'cli', 'main.ts')

const units = async (): Promise<Map<string, string>> => {
  const names = (await readdir(UNITS)).filter((n) => n.endsWith('.service')).sort()
  return new Map(
    await Promise.all(
      names.map(async (n) => [n, await readFile(path.join(UNITS, n), 'utf8')] as const),
    ),
  )
}

const directive = (unit: string, key: string): string[] =>
  unit
    .split('\n')
    .filter((l) => l.startsWith(`${key}=`))
    .map((l) => l.slice(key.length + 1))

test('the units run the components with the CLI, restart always, and drain on SIGTERM', async () => {
  const all = await units()
  assert.deepEqual(
    [...all.keys()],
    ['cairn-oms.service', 'cairn-publisher.service', 'cairn-worker@.service'],
  )
  const commands = [...all.values()].map((u) => directive(u, 'ExecStart'))
  assert.deepEqual(commands, [
    ['/usr/local/bin/cairn oms'],
    ['/usr/local/bin/cairn publisher'],
    ['/usr/local/bin/cairn worker %i'],
  ])
  for (const [name, unit] of all) {
    assert.deepEqual(directive(unit, 'Restart'), ['always'], name)
    assert.deepEqual(directive(unit, 'KillSignal'), ['SIGTERM'], name)
    assert.deepEqual(directive(unit, 'StartLimitIntervalSec'), ['0'], name)
    assert.deepEqual(directive(unit, 'EnvironmentFile').slice(0, 1), ['/etc/cairn/cairn.env'], name)
  }
})

test('systemd accepts the units (systemd-analyze verify)', async (t) => {
  const verify = await run('systemd-analyze', ['--version']).then(
    () => true,
    () => false,
  )
  if (!verify) {
    t.skip('systemd-analyze is not installed here')
    return
  }
  const dir = await mkdtemp(path.join(tmpdir(), 'cairn-units-'))
  try {
    const files: string[] = []
    for (const [name, unit] of await units()) {
      // An executable that exists here, and the template as one of its instances.
      const file = path.join(dir, name.replace('@.service', '@projection.service'))
      await writeFile(file, unit.replaceAll('/usr/local/bin/cairn', `${NODE} ${MAIN}`))
      files.push(file)
    }
    const { stdout, stderr } = await run('systemd-analyze', ['verify', ...files], { cwd: dir })
    assert.equal(`${stdout}${stderr}`.trim(), '', 'no warning')
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})

test('a process that cannot go on exits 1 promptly, with its reason on stderr', async () => {
  const exit = (args: string[], env: Record<string, string>) =>
    new Promise<{ code: number | null; out: string }>((resolve, reject) => {
      const child = spawn(NODE, [MAIN, ...args], {
        cwd: ROOT,
        env: childEnv(env),
        stdio: ['ignore', 'pipe', 'pipe'],
      })
      let out = ''
      child.stdout.on('data', (c: Buffer) => (out += c.toString()))
      child.stderr.on('data', (c: Buffer) => (out += c.toString()))
      const timer = setTimeout(() => {
        child.kill('SIGKILL')
        reject(new Error(`still running after 30 s: ${out}`))
      }, 30_000)
      child.once('exit', (code) => {
        clearTimeout(timer)
        resolve({ code, out })
      })
    })
  const unknownRole = await exit(['worker', 'nosuchrole'], { CAIRN_MODE: 'distributed' })
  assert.equal(unknownRole.code, 1)
  assert.match(unknownRole.out, /unknown worker role nosuchrole/)
  const badConfig = await exit(['publisher'], {
    CAIRN_MODE: 'distributed',
    CAIRN_DATABASE_QUERY_TIMEOUT_SECONDS: 'soon',
  })
  assert.equal(badConfig.code, 1)
  assert.match(badConfig.out, /CAIRN_DATABASE_QUERY_TIMEOUT_SECONDS=soon/)
})
