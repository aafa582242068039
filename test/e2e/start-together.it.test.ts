import assert from 'node:assert/strict'
import { test } from 'node:test'
import { startCairn } from '../support/cairn-process.ts'
import type { CairnProcess } from '../support/cairn-process.ts'
import {
  COMPONENTS,
  DEPLOYMENT_TOKEN,
  commandsComplete,
  freshDeployment,
  withOutputs,
} from '../support/oms-deployment.ts'
import { httpClient } from '../support/oms-client.ts'

const ROUNDS = 3

// Operators start everything at once: every process creates the same bucket, schema and topics in
// the same instant. None may give up, and commands must complete. A few rounds, each on a fresh
// deployment (bucket, schema, topic prefix), since a race loses only now and then.
test(
  `oms, publisher and workers (two of the OMS, the publisher and the instance worker) started at the same moment, ${ROUNDS} rounds on fresh deployments: all run, commands complete`,
  { timeout: ROUNDS * 150_000 },
  async () => {
    for (let round = 1; round <= ROUNDS; round++) {
      const deployment = freshDeployment('together', {
        // More partitions than the default widen the moment in which a process is told that the
        // topics exist before the broker lists them (test/adapters/bus pins that race down).
        EVENT_PUBLISHER_TOPIC_PARTITIONS: '16',
      })
      const started = await Promise.allSettled(
        COMPONENTS.map((c) => startCairn(c.args, { ...deployment.env, ...c.env }, 90_000)),
      )
      const running = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []))
      try {
        const failed = started.flatMap((s) => (s.status === 'rejected' ? [String(s.reason)] : []))
        assert.deepEqual(failed, [], `round ${round}: every component starts and runs`)
        const [oms] = running as [CairnProcess]
        await commandsComplete(httpClient(oms.url, DEPLOYMENT_TOKEN))
        const codes = await Promise.all(running.map((p) => p.stop('SIGTERM')))
        assert.deepEqual(
          codes,
          running.map(() => 0),
          `round ${round}: SIGTERM drains every component`,
        )
      } catch (error) {
        throw withOutputs(error, running)
      } finally {
        await Promise.all(running.map((p) => p.stop('SIGKILL')))
        await deployment.cleanup()
      }
    }
  },
)
