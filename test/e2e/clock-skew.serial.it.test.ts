import assert from 'node:assert/strict'
import { existsSync, readdirSync } from 'node:fs'
import path from 'node:path'
import { after, before, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { startCairn } from '../support/cairn-process.ts'
import type { CairnProcess } from '../support/cairn-process.ts'
import { httpClient } from '../support/oms-client.ts'
import type { OmsClient } from '../support/oms-client.ts'
import { DEPLOYMENT_TOKEN, freshDeployment } from '../support/oms-deployment.ts'

/** libfaketime (Debian's faketime package, which scripts/services.sh installs). */
const libfaketime = (): string => {
  for (const dir of readdirSync('/usr/lib')) {
    const candidate = path.join('/usr/lib', dir, 'faketime', 'libfaketime.so.1')
    if (existsSync(candidate)) return candidate
  }
  throw new Error('libfaketime not found: run scripts/services.sh up (it installs faketime)')
}

/** The environment of a process whose clocks (wall and monotonic) are `offset` off, e.g. '-3m'. */
const skewed = (offset: string): Record<string, string> => ({
  LD_PRELOAD: libfaketime(),
  FAKETIME: offset,
})

// Heavy (five processes, a frozen writer under load): runs alone, in the serial phase.
const deployment = freshDeployment('clock')
const env = deployment.env
const processes: Record<string, CairnProcess> = {}

before(async () => {
  // One OMS on a good clock first, then the rest with wrong clocks, minutes apart: within what S3
  // request signing tolerates (15 minutes), far beyond any bound.
  processes.good = await startCairn(['oms'], env)
  const [behind, publisher, commands, projection] = await Promise.all([
    startCairn(['oms'], { ...env, ...skewed('-3m') }),
    startCairn(['publisher'], { ...env, ...skewed('+3m') }),
    startCairn(['worker', 'ontology', 'instance'], {
      ...env,
      ...skewed('+2m'),
      CAIRN_MEMBER_NAME: 'commands-ahead',
    }),
    startCairn(['worker', 'projection'], {
      ...env,
      ...skewed('-2m'),
      CAIRN_MEMBER_NAME: 'projection-behind',
    }),
  ])
  Object.assign(processes, { behind, publisher, commands, projection })
})

after(async () => {
  for (const p of Object.values(processes)) {
    if (p.child.pid !== undefined) {
      try {
        process.kill(p.child.pid, 'SIGCONT')
      } catch {
        // already gone
      }
    }
  }
  await Promise.all(Object.values(processes).map((p) => p.stop('SIGKILL')))
  await deployment.cleanup()
})

const metric = async (p: CairnProcess, name: string): Promise<number> => {
  const text = (await httpClient(p.url).get('/metrics')).text
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text)
  assert.ok(m?.[1] !== undefined, `${name} in /metrics`)
  return Number(m[1])
}

test('writers, publisher and workers with clocks minutes off, a writer frozen beyond the bound under load: every acknowledged command completes, once', async () => {
  const good = httpClient((processes.good as CairnProcess).url, DEPLOYMENT_TOKEN)
  const behind = httpClient((processes.behind as CairnProcess).url, DEPLOYMENT_TOKEN)
  const db = `clk-${Date.now()}`
  const settled = async (c: OmsClient, r: { status: number; text: string; json: any }) => {
    assert.equal(r.status, 202, r.text)
    assert.equal((await c.settle(String(r.json.command_id), 60_000)).status, 'COMPLETED')
  }
  await settled(good, await good.post('/api/v1/databases', { name: db }))
  await settled(
    behind,
    await behind.post(`/api/v1/databases/${db}/classes`, {
      id: 'Item',
      properties: [{ name: 'n', type: 'integer', required: true }],
    }),
  )

  // Eight clients, four per OMS, for about 12 s; the OMS whose clock is behind is frozen for
  // 5 s (the bound EVENT_STORE_MAX_INDEX_DELAY_SECONDS is 2 s) in the middle of it.
  const accepted: { id: string; command: string }[] = []
  const statuses = new Map<number, number>()
  const until = Date.now() + 12_000
  const client = async (c: OmsClient, k: number): Promise<void> => {
    for (let i = 0; i < 80 && Date.now() < until; i++) {
      const id = `i-${k}-${i}`
      const r = await c.post(`/api/v1/databases/${db}/classes/Item/instances`, {
        id,
        data: { n: i },
      })
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1)
      if (r.status === 202) accepted.push({ id, command: String(r.json.command_id) })
      else assert.equal(r.status, 503, `only 202 or 503: ${r.text}`)
    }
  }
  const frozen = (processes.behind as CairnProcess).child.pid as number
  const freeze = (async () => {
    await sleep(3_000)
    process.kill(frozen, 'SIGSTOP')
    await sleep(5_000)
    process.kill(frozen, 'SIGCONT')
  })()
  await Promise.all([
    ...[0, 1, 2, 3].map((k) => client(good, k)),
    ...[4, 5, 6, 7].map((k) => client(behind, k)),
    freeze,
  ])
  assert.ok(accepted.length >= 40, `load ran: ${JSON.stringify([...statuses])}`)

  // Every 202 completes and its instance is in the read model, applied once (seq 2: command 1,
  // INSTANCE_CREATED 2).
  let next = 0
  const check = async (): Promise<void> => {
    for (let a = accepted[next++]; a !== undefined; a = accepted[next++]) {
      await settled(good, { status: 202, text: '', json: { command_id: a.command } })
      const r = await good.get(`/api/v1/databases/${db}/classes/Item/instances/${a.id}`)
      assert.equal(r.status, 200, `${a.id}: ${r.text}`)
      assert.equal(r.json.seq, 2, r.text)
    }
  }
  await Promise.all(Array.from({ length: 8 }, check))

  // The publisher, three minutes ahead, settles on the database's clock and says how far off it is.
  const publisher = processes.publisher as CairnProcess
  assert.equal(await metric(publisher, 'cairn_publisher_settling'), 1)
  const offset = await metric(publisher, 'cairn_publisher_clock_offset_ms')
  assert.ok(Math.abs(offset - 180_000) < 10_000, `publisher clock offset ${offset} ms`)
  for (const [name, p] of Object.entries(processes))
    assert.equal(p.child.exitCode, null, `${name} exited:\n${p.output().slice(-3000)}`)
})
