import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { childEnv } from '../support/child.ts'
import { eventually } from '../support/collect.ts'
import { FAST_ENV, openEmbedded } from '../support/embedded.ts'
import { inProcessClient } from '../support/oms-client.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

test('cairn tail follows new events live beside a running cairn, filtered by aggregate type', async (t) => {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'cairn-tail-'))
  t.after(() => rm(dataDir, { recursive: true, force: true }))
  const running = await openEmbedded({ dataDir })
  t.after(() => running.close())
  const c = inProcessClient(running.runtime.app)
  // Before the tail starts: not shown.
  await c.settle((await c.post('/api/v1/databases', { name: 'before' })).json.command_id)

  const tail = (args: string[]) => {
    const child = spawn(
      path.join(ROOT, 'node_modules', '.bin', 'node'),
      [path.join(ROOT, 'src', 'cli', 'main.ts'), 'tail', ...args],
      { cwd: ROOT, env: childEnv({ ...FAST_ENV, CAIRN_DATA_DIR: dataDir }), stdio: 'pipe' },
    )
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (out += d.toString()))
    const exited = new Promise<number | null>((r) => child.once('exit', r))
    t.after(() => child.kill('SIGKILL'))
    return { child, exited, out: () => out }
  }
  // From a time after it (not from whenever the processes are up: under load that is later).
  await new Promise((r) => setTimeout(r, 50))
  const since = new Date().toISOString()
  const json = tail(['--type', 'Database', '--json', '--since', since])
  const human = tail(['--id', 'live', '--since', since])

  const created = await c.post('/api/v1/databases', { name: 'live' })
  await c.settle(created.json.command_id)
  await c.settle((await c.post('/api/v1/databases/live/classes', { id: 'Thing' })).json.command_id)

  await eventually(
    () => json.out().includes('"event_type":"DATABASE_CREATED"'),
    'tail --json',
    60_000,
  )
  const events = json
    .out()
    .trim()
    .split('\n')
    .map(
      (l) => JSON.parse(l) as { aggregate_type: string; aggregate_id: string; event_type: string },
    )
  assert.ok(
    events.every((e) => e.aggregate_type === 'Database'),
    'only Database aggregates',
  )
  assert.ok(
    events.every((e) => e.aggregate_id === 'live'),
    'nothing from before the tail started',
  )
  assert.deepEqual(
    events.map((e) => e.event_type),
    ['CREATE_DATABASE_REQUESTED', 'DATABASE_CREATED'],
  )
  await eventually(
    () => /Database\/live +1 +CREATE_DATABASE_REQUESTED/.test(human.out()),
    'table',
    60_000,
  )
  assert.match(human.out(), /^occurred_at +aggregate +seq +type +data/)
  assert.doesNotMatch(human.out(), /OntologyClass/, '--id live: the class live:Thing is another id')

  json.child.kill('SIGINT')
  assert.equal(await json.exited, 0, 'Ctrl-C stops it cleanly')
})
