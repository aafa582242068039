import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, before, test } from 'node:test'
import { startCairn } from '../support/cairn-process.ts'
import type { CairnProcess } from '../support/cairn-process.ts'
import { httpClient } from '../support/oms-client.ts'
import { freeze, restoreAll, stop } from '../support/service-control.ts'
import type { Service } from '../support/service-control.ts'
import { DEPLOYMENT_TOKEN, freshDeployment } from '../support/oms-deployment.ts'

/**
 * Issue 16: every component as its own process under steady load while each dependency is, in
 * turn, frozen (SIGSTOP, then SIGCONT) or stopped and started again. Asserts that no process
 * exited, that every request was answered (no hang) with 202 or 503 and nothing else, that every
 * 202 completed and is visible in the read model, that each process's /readyz said 503 while its
 * dependency was away and 200 once it was back.
 *
 * Stops and freezes the services of `scripts/services.sh`: runs alone (serial phase).
 */

const TOKEN = DEPLOYMENT_TOKEN
/** A request not answered within this is a hung request. */
const HUNG_MS = 60_000
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const chunks = <T>(items: readonly T[], size: number): T[][] =>
  Array.from({ length: Math.ceil(items.length / size) }, (_, i) =>
    items.slice(i * size, (i + 1) * size),
  )

type Outage = {
  readonly name: string
  readonly service: Service
  readonly kind: 'freeze' | 'stop'
  readonly seconds: number
}

const OUTAGES: readonly Outage[] = [
  { name: 'MinIO frozen', service: 'minio', kind: 'freeze', seconds: 12 },
  { name: 'PostgreSQL stopped', service: 'postgres', kind: 'stop', seconds: 12 },
  { name: 'PostgreSQL frozen', service: 'postgres', kind: 'freeze', seconds: 12 },
  { name: 'Kafka stopped', service: 'kafka', kind: 'stop', seconds: 15 },
  // Longer: a Kafka request gives up after its timeout and the client's retries (about 16 s).
  { name: 'Kafka frozen', service: 'kafka', kind: 'freeze', seconds: 25 },
  { name: 'MinIO stopped', service: 'minio', kind: 'stop', seconds: 12 },
]

/** The processes that need the dependency (all use the bucket and the database; Kafka not the OMS). */
const users = (svc: Service, names: readonly string[]): string[] =>
  svc === 'kafka' ? names.filter((n) => n !== 'oms') : [...names]

const deployment = freshDeployment('outages', {
  CAIRN_DATABASE_CONNECT_TIMEOUT_SECONDS: '3',
  CAIRN_DATABASE_QUERY_TIMEOUT_SECONDS: '5',
  CAIRN_S3_REQUEST_TIMEOUT_SECONDS: '5',
})
const env = deployment.env

const processes = new Map<string, CairnProcess>()

before(async () => {
  const started = await Promise.all([
    startCairn(['oms'], env),
    startCairn(['publisher'], env),
    startCairn(['worker', 'ontology'], { ...env, CAIRN_MEMBER_NAME: 'ontology-1' }),
    startCairn(['worker', 'instance'], { ...env, CAIRN_MEMBER_NAME: 'instance-1' }),
    startCairn(['worker', 'projection'], { ...env, CAIRN_MEMBER_NAME: 'projection-1' }),
  ])
  for (const [i, name] of ['oms', 'publisher', 'ontology', 'instance', 'projection'].entries()) {
    processes.set(name, started[i] as CairnProcess)
  }
})

after(async () => {
  // Whatever happened, the services come back.
  await restoreAll()
  await Promise.all([...processes.values()].map((p) => p.stop('SIGKILL')))
  await deployment.cleanup()
})

const outputs = (): string =>
  [...processes].map(([n, p]) => `--- ${n} ---\n${p.output().slice(-3000)}`).join('\n')

test(
  'every process rides out each dependency frozen or stopped in turn: no exit, no hang, 202 or 503 only, every 202 completed and readable',
  {
    timeout: 900_000,
  },
  async (t) => {
    const oms = processes.get('oms') as CairnProcess
    const c = httpClient(oms.url, TOKEN)
    const db = `db-${randomUUID().slice(0, 8)}`
    const setup = async (path: string, body: unknown): Promise<void> => {
      const r = await c.post(path, body)
      assert.equal(r.status, 202, r.text)
      assert.equal((await c.settle(String(r.json.command_id), 60_000)).status, 'COMPLETED')
    }
    await setup('/api/v1/databases', { name: db })
    await setup(`/api/v1/databases/${db}/classes`, {
      id: 'Item',
      properties: [{ name: 'n', type: 'integer', required: true }],
    })

    // Steady load: clients creating instances without pause (503: retried a moment later).
    const accepted: { commandId: string; id: string }[] = []
    const statuses = new Map<number, number>()
    const unexpected: string[] = []
    let hung = 0
    let loading = true
    let n = 0
    const client = async (): Promise<void> => {
      while (loading) {
        const id = `i${n++}`
        try {
          const res = await fetch(`${oms.url}/api/v1/databases/${db}/classes/Item/instances`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
            body: JSON.stringify({ id, data: { n } }),
            signal: AbortSignal.timeout(HUNG_MS),
          })
          const text = await res.text()
          statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1)
          if (res.status === 202) {
            accepted.push({
              commandId: (JSON.parse(text) as { command_id: string }).command_id,
              id,
            })
          } else if (res.status === 503) {
            await sleep(200)
          } else {
            unexpected.push(`${res.status} ${text.slice(0, 300)}`)
          }
        } catch (error) {
          if ((error as Error).name === 'TimeoutError') hung++
          else unexpected.push(`request failed: ${String(error)}`)
          await sleep(200)
        }
      }
    }
    const load = Array.from({ length: 4 }, client)

    // Readiness of every process, polled throughout: what each said during each outage.
    const notReady = new Map<string, Set<string>>()
    let phase = 'steady'
    let polling = true
    const readiness = async (p: CairnProcess): Promise<number> => {
      try {
        const res = await fetch(`${p.url}/readyz`, { signal: AbortSignal.timeout(10_000) })
        await res.text()
        return res.status
      } catch {
        return 0
      }
    }
    const poller = (async () => {
      while (polling) {
        await Promise.all(
          [...processes].map(async ([name, p]) => {
            const at = phase
            if ((await readiness(p)) === 503) {
              const seen = notReady.get(at) ?? new Set<string>()
              seen.add(name)
              notReady.set(at, seen)
            }
          }),
        )
        await sleep(500)
      }
    })()
    const allReady = async (what: string): Promise<void> => {
      const deadline = Date.now() + 90_000
      for (;;) {
        const codes = await Promise.all([...processes.values()].map((p) => readiness(p)))
        if (codes.every((s) => s === 200)) return
        if (Date.now() > deadline) {
          assert.fail(
            `not every process ready again after ${what}: ${codes.join(',')}\n${outputs()}`,
          )
        }
        await sleep(500)
      }
    }

    try {
      await sleep(5_000)
      assert.ok(
        accepted.length > 0,
        `no command accepted before the outages: ${JSON.stringify([...statuses])}`,
      )
      for (const o of OUTAGES) {
        phase = o.name
        if (o.kind === 'freeze') {
          const thaw = await freeze(o.service)
          await sleep(o.seconds * 1000)
          await thaw()
        } else {
          const start = await stop(o.service)
          await sleep(o.seconds * 1000)
          await start()
        }
        phase = `after ${o.name}`
        await allReady(o.name)
        await sleep(3_000)
      }
    } finally {
      loading = false
      await Promise.all(load)
      polling = false
      await poller
    }

    for (const [name, p] of processes) {
      assert.equal(p.child.exitCode, null, `${name} exited\n${outputs()}`)
      assert.equal(p.child.signalCode, null, `${name} was killed\n${outputs()}`)
    }
    assert.equal(hung, 0, `${hung} requests not answered within ${HUNG_MS} ms`)
    assert.deepEqual(
      unexpected,
      [],
      `answers other than 202 and 503: ${JSON.stringify([...statuses])}`,
    )
    assert.ok((statuses.get(503) ?? 0) > 0, 'some requests were refused during the outages')
    t.diagnostic(
      `answers: ${JSON.stringify(Object.fromEntries(statuses))}; accepted ${accepted.length}`,
    )
    // Every acknowledged command completes, and its instance is in the read model.
    const deadline = Date.now() + 300_000
    const open = new Map(accepted.map((a) => [a.commandId, a]))
    const check = async (a: { commandId: string }): Promise<void> => {
      const r = await c.get(`/api/v1/commands/${a.commandId}`)
      if (r.status === 200 && r.json.status === 'COMPLETED') open.delete(a.commandId)
      else if (r.status === 200 && r.json.status === 'FAILED') {
        assert.fail(`command ${a.commandId} FAILED: ${r.text}`)
      }
    }
    while (open.size > 0) {
      const before = open.size
      // In order of acceptance, 20 requests at a time, until one is still open.
      for (const batch of chunks([...open.values()], 20)) {
        await Promise.all(batch.map(check))
        if (batch.some((a) => open.has(a.commandId))) break
      }
      if (open.size > 0 && Date.now() > deadline) {
        const sample = [...open.values()].slice(0, 3)
        const states = await Promise.all(
          sample.map(async (a) => (await c.get(`/api/v1/commands/${a.commandId}`)).text),
        )
        assert.fail(
          `${open.size} of ${accepted.length} accepted commands not COMPLETED: ${states.join('\n')}\n${outputs()}`,
        )
      }
      if (open.size === before) await sleep(500)
    }
    for (const batch of chunks(accepted, 20)) {
      await Promise.all(
        batch.map(async (a) => {
          const r = await c.get(`/api/v1/databases/${db}/classes/Item/instances/${a.id}`)
          assert.equal(r.status, 200, `instance ${a.id}: ${r.text}`)
        }),
      )
    }

    for (const o of OUTAGES) {
      const said = [...(notReady.get(o.name) ?? [])].sort()
      const expected = users(o.service, [...processes.keys()]).sort()
      assert.deepEqual(said, expected, `/readyz 503 during "${o.name}"`)
    }

    // And each still stops cleanly.
    const codes = await Promise.all([...processes.values()].map((p) => p.stop('SIGTERM')))
    assert.deepEqual(
      codes,
      [...processes.values()].map(() => 0),
      outputs(),
    )
  },
)
