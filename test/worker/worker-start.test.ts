import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createInProcessBus } from '../../src/adapters/bus/in-process-bus.ts'
import { migrate } from '../../src/adapters/sql/migrations.ts'
import { createPgliteSql } from '../../src/adapters/sql/pglite.ts'
import { CairnError, ErrorCode } from '../../src/core/errors.ts'
import type { Bus } from '../../src/core/ports/bus.ts'
import { createProcessedEventRegistry } from '../../src/registry/processed-events.ts'
import { createWorker } from '../../src/worker/worker.ts'

test('a worker whose bus refuses its configuration stops with the reason instead of pausing forever', async () => {
  const inner = createInProcessBus()
  const sql = await createPgliteSql()
  await migrate(sql, 'w_cfg')
  const bus: Bus = {
    ...inner,
    consumer: () =>
      Promise.reject(
        new CairnError(
          ErrorCode.BUS_ERROR,
          'rebalanceTimeout must be greater than or equal to sessionTimeout',
        ),
      ),
  }
  const worker = createWorker({
    bus,
    registry: createProcessedEventRegistry({ sql, schema: 'w_cfg', member: 'cfg' }),
    handler: 'h',
    topics: ['t'],
    groupId: 'g',
    handle: async () => {},
  })
  try {
    await assert.rejects(worker.run(), /rebalanceTimeout/)
  } finally {
    await inner.close()
    await sql.close()
  }
})
