import assert from 'node:assert/strict'
import { test } from 'node:test'
import { MultipleErrors, ResponseError } from '@platformatic/kafka'
import { isBrokerTransient, kafkaErrorIds } from '../../../src/adapters/bus/kafka-bus.ts'

// A JoinGroup (API 11, v9) answered with a broker error code, as the client reports it: one
// response error per try, gathered when its retries run out.
const joinFailed = (...codes: number[]): Error =>
  new MultipleErrors(
    `joinGroup failed ${codes.length} times.`,
    codes.map((code) => new ResponseError(11, 9, { '/': [code, null] }, {})),
  )

test("a broker's error names are read out of the client's nested failures", () => {
  assert.deepEqual(kafkaErrorIds(joinFailed(15, 15)), ['COORDINATOR_NOT_AVAILABLE'])
  assert.deepEqual(kafkaErrorIds(joinFailed(14, 16)).sort(), [
    'COORDINATOR_LOAD_IN_PROGRESS',
    'NOT_COORDINATOR',
  ])
  assert.deepEqual(kafkaErrorIds(new Error('connect ECONNREFUSED')), [])
})

test('a coordinator still loading is waited for; a lasting refusal or an unreachable broker is not', () => {
  assert.equal(isBrokerTransient(joinFailed(15, 14, 16, 15)), true)
  // GROUP_AUTHORIZATION_FAILED (30) will not go away by waiting.
  assert.equal(isBrokerTransient(joinFailed(15, 30)), false)
  // No answer at all: the worker's pause handles an outage, not this wait.
  assert.equal(isBrokerTransient(new Error('connect ECONNREFUSED')), false)
})
