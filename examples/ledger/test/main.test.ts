import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { test } from 'node:test'

/**
 * The example as its README runs it: `main.ts` in a process of its own, embedded mode, then its
 * `rebuild` command on the same data.
 */
const main = path.join(import.meta.dirname, '..', 'main.ts')

const run = (args: readonly string[], env: Record<string, string>) => {
  const child = spawn(process.execPath, ['--conditions=cairn-source', main, ...args], {
    env: { ...process.env, LOG_FORMAT: 'json', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  let err = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr.on('data', (d: Buffer) => (err += d.toString()))
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  return { child, exited, out: () => out, err: () => err }
}

test('main.ts serves the ledger embedded; rebuild re-applies the balances from the bucket', async (t) => {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'ledger-main-'))
  t.after(() => rm(dataDir, { recursive: true, force: true }))
  const env = { CAIRN_DATA_DIR: dataDir, PORT: '0' }
  const server = run([], env)
  t.after(() => server.child.kill('SIGKILL'))
  const deadline = Date.now() + 60_000
  let url: string | undefined
  while (url === undefined) {
    assert.ok(Date.now() < deadline, `no address after 60 s: ${server.err()}${server.out()}`)
    url = /"http":"(http:\/\/[^"]+)","msg":"ledger is running"/.exec(server.out())?.[1]
    await new Promise((r) => setTimeout(r, 50))
  }
  const post = async (p: string, body: unknown) => {
    const r = await fetch(`${url}${p}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    })
    const text = await r.text()
    assert.equal(r.status, 202, text)
    return (JSON.parse(text) as { command_id: string }).command_id
  }
  const outcome = async (id: string) => {
    for (;;) {
      const r = (await (await fetch(`${url}/api/v1/commands/${id}`)).json()) as { status: string }
      if (r.status !== 'PENDING' && r.status !== 'PROCESSING') return r.status
      await new Promise((res) => setTimeout(res, 20))
    }
  }
  assert.equal(
    await outcome(await post('/api/v1/accounts', { account_id: 'm', owner: 'M' })),
    'COMPLETED',
  )
  assert.equal(
    await outcome(await post('/api/v1/accounts/m/deposits', { amount: 42 })),
    'COMPLETED',
  )
  for (;;) {
    const r = await fetch(`${url}/api/v1/accounts/m`)
    if (r.status === 200 && ((await r.json()) as { balance: number }).balance === 42) break
    await new Promise((res) => setTimeout(res, 20))
  }
  server.child.kill('SIGINT')
  assert.equal(await server.exited, 0, server.err())

  const dry = run(['rebuild', 'balances'], env)
  assert.equal(await dry.exited, 0, dry.err())
  assert.match(dry.out(), /add --yes/)
  const rebuild = run(['rebuild', 'balances', '--yes'], env)
  assert.equal(await rebuild.exited, 0, rebuild.err())
  const summary = JSON.parse(rebuild.out().trim().split('\n').at(-1) ?? '{}') as {
    projection: string
    applied: number
  }
  assert.deepEqual(summary.projection, 'balances')
  assert.equal(summary.applied, 2) // AccountOpened, Deposited
  const unknown = run(['rebuild', 'nope', '--yes'], env)
  assert.equal(await unknown.exited, 1)
  assert.match(unknown.err(), /no projection "nope"; declared: balances/)
})
