import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { listeningUrlOf, startCairn } from '../support/cairn-process.ts'
import type { CairnProcess } from '../support/cairn-process.ts'
import { eventually } from '../support/collect.ts'
import { httpClient } from '../support/oms-client.ts'
import {
  COMPONENTS,
  DEPLOYMENT_TOKEN,
  commandsComplete,
  freshDeployment,
  withOutputs,
} from '../support/oms-deployment.ts'

const run = promisify(execFile)
const services = fileURLToPath(new URL('../../scripts/services.sh', import.meta.url))
const NEEDED = ['postgres', 'kafka', 'minio']

// Stops the shared PostgreSQL, Kafka and MinIO: runs alone (serial phase of scripts/test.sh).
test(
  'components started before PostgreSQL, Kafka and MinIO wait for them (saying so on /readyz), then run: commands complete',
  { timeout: 300_000 },
  async () => {
    const deployment = freshDeployment('early')
    const started: CairnProcess[] = []
    let servicesDown = false
    try {
      await run('bash', [services, 'down', ...NEEDED])
      servicesDown = true
      const listening = await Promise.allSettled(
        COMPONENTS.map((c) =>
          startCairn(c.args, { ...deployment.env, ...c.env }, 60_000, listeningUrlOf),
        ),
      )
      started.push(...listening.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : [])))
      assert.deepEqual(
        listening.flatMap((s) => (s.status === 'rejected' ? [String(s.reason)] : [])),
        [],
        'every component listens while its services are down',
      )

      // Each says what it waits for, in its log and on /readyz, and keeps waiting.
      for (const p of started) {
        await eventually(
          () => p.output().includes('"msg":"waiting for the object store'),
          'a log line naming the object store it waits for',
          30_000,
        )
        const ready = await httpClient(p.url).get('/readyz')
        assert.equal(ready.status, 503, ready.text)
        assert.match(String(ready.json.checks.startup), /^waiting for the object store at /)
        assert.equal((await httpClient(p.url).get('/healthz')).status, 200)
      }
      const oms = started[0] as CairnProcess
      const early = await httpClient(oms.url, DEPLOYMENT_TOKEN).post('/api/v1/databases', {
        name: 'too-early',
      })
      assert.equal(early.status, 503, early.text)
      assert.equal(early.json.code, 'starting')
      // One more, stopped while it waits: a clean stop, exit code 0.
      const extra = await startCairn(
        ['worker', 'projection'],
        { ...deployment.env, CAIRN_MEMBER_NAME: 'projection-stopped' },
        60_000,
        listeningUrlOf,
      )
      started.push(extra)
      await eventually(() => extra.output().includes('"msg":"waiting for'), 'it waits', 30_000)
      assert.equal(await extra.stop('SIGTERM'), 0)
      assert.match(extra.output(), /stopped while waiting for the object store/)
      started.pop()
      await new Promise((r) => setTimeout(r, 3_000))
      assert.deepEqual(
        started.map((p) => p.child.exitCode),
        started.map(() => null),
        'none gave up',
      )

      await run('bash', [services, 'up', ...NEEDED])
      servicesDown = false
      for (const p of started) {
        await eventually(
          () => /"msg":"[a-z]+ is running"/.test(p.output()),
          'the component runs once its services are there',
          120_000,
        )
        const ready = await httpClient(p.url).get('/readyz')
        assert.equal(ready.status, 200, ready.text)
      }
      // It waited for PostgreSQL and Kafka too, once the object store answered (or they came up
      // in the other order): every wait is logged, and each ended.
      assert.ok(
        started.some((p) => /"msg":"[^"]+ is there"/.test(p.output())),
        'a component logs that what it waited for is there',
      )
      await commandsComplete(httpClient(oms.url, DEPLOYMENT_TOKEN), 90_000)
      const codes = await Promise.all(started.map((p) => p.stop('SIGTERM')))
      assert.deepEqual(
        codes,
        started.map(() => 0),
        'SIGTERM drains every component',
      )
    } catch (error) {
      throw withOutputs(error, started)
    } finally {
      await Promise.all(started.map((p) => p.stop('SIGKILL')))
      if (servicesDown) await run('bash', [services, 'up', ...NEEDED])
      await deployment.cleanup()
    }
  },
)
