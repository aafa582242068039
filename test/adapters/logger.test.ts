import assert from 'node:assert/strict'
import { test } from 'node:test'
import { prettyLine } from '../../src/adapters/logger/pino.ts'

test('a JSON log line reads as time, level, message and the fields, without colour codes', () => {
  const line = JSON.stringify({
    level: 40,
    time: Date.UTC(2026, 11, 6, 12, 0, 1, 234),
    pid: 7,
    hostname: 'h',
    name: 'cairn',
    component: 'publisher',
    msg: 'commit listener reconnected',
    lag: 3,
    reason: 'two words',
  })
  assert.equal(
    prettyLine(line, false),
    '12:00:01.234 WARN  commit listener reconnected component=publisher lag=3 reason="two words"',
  )
})

test('colour only when asked; a line that is not JSON passes through', () => {
  const line = JSON.stringify({ level: 50, time: 0, msg: 'failed' })
  assert.match(prettyLine(line, true), /\u001b\[31mERROR\u001b\[0m failed/)
  assert.equal(prettyLine('not json', false), 'not json')
})
