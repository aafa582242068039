import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { ResultRow } from '../../bench/lib/harness.ts'
import { s3RequestCost } from '../../bench/lib/report.ts'

const row = (over: Partial<ResultRow>): ResultRow => ({
  scenario: 's',
  variant: 'v',
  kind: 'scenario',
  events: 1,
  seconds: 1,
  throughput: 1,
  latency: null,
  cpuUsPerEvent: {},
  objectStorePerEvent: null,
  serverRequestsPerEvent: null,
  ...over,
})

test('S3 request cost per million events at list prices: PUT and LIST $5, GET and HEAD $0.40 per million', () => {
  // One PUT per event: $5.00; 1.1 PUT (a body and a tenth of a manifest): $5.50.
  assert.equal(s3RequestCost(row({ serverRequestsPerEvent: { putobject: 1 } })), 5)
  assert.equal(s3RequestCost(row({ serverRequestsPerEvent: { putobject: 1.1 } })), 5.5)
  assert.equal(
    s3RequestCost(
      row({
        serverRequestsPerEvent: {
          putobject: 0.05,
          listobjectsv2: 0.01,
          getobject: 1,
          headobject: 0.5,
          deleteobject: 3,
        },
      }),
    ),
    0.9,
  )
})

test("without the server's counts, the bench's own store counts are priced; with neither, no cost", () => {
  assert.equal(
    s3RequestCost(row({ objectStorePerEvent: { put: 0.1, putIfMatch: 0, get: 2.5, list: 0.02 } })),
    1.6,
  )
  assert.equal(s3RequestCost(row({})), null)
})
