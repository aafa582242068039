import assert from 'node:assert/strict'
import { test } from 'node:test'
import { createStartupGate, isWorthWaiting } from '../../src/config/startup.ts'
import { CairnError, ErrorCode, isCairnError } from '../../src/core/errors.ts'
import type { Logger } from '../../src/core/ports/logger.ts'

/** A logger that keeps its lines. */
const recording = (): Logger & { lines: { level: string; msg: string; obj: object }[] } => {
  const lines: { level: string; msg: string; obj: object }[] = []
  const at =
    (level: string) =>
    (obj: object, msg = '') => {
      lines.push({ level, msg, obj })
    }
  const logger = {
    lines,
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    child: () => logger,
  }
  return logger
}

const systemError = (code: string): Error =>
  Object.assign(new Error(`connect ${code} 127.0.0.1:5432`), { code })

test('failures of a service not there yet are worth waiting for; configuration errors are not', () => {
  for (const e of [
    systemError('ECONNREFUSED'),
    systemError('ENOTFOUND'),
    // Node's refusal by every address of a name: an AggregateError with an empty message.
    Object.assign(new AggregateError([systemError('ECONNREFUSED')], ''), { code: 'ECONNREFUSED' }),
    new AggregateError([systemError('ECONNREFUSED'), systemError('ECONNREFUSED')], ''),
    Object.assign(new Error('the database system is starting up'), { code: '57P03' }),
    Object.assign(new Error('sorry, too many clients already'), { code: '53300' }),
    Object.assign(new Error('connection failure'), { code: '08006' }),
    new Error('Connection terminated unexpectedly'),
    new CairnError(ErrorCode.BUS_UNAVAILABLE, 'kafka down', { retryable: true }),
    new CairnError(ErrorCode.OBJECT_STORE_UNAVAILABLE, 's3 down', { retryable: true }),
    new CairnError(ErrorCode.SQL_ERROR, 'wrapped', { cause: systemError('ECONNRESET') }),
  ]) {
    assert.equal(isWorthWaiting(e), true, `${String(e)} is worth waiting for`)
  }
  for (const e of [
    Object.assign(new Error('password authentication failed'), { code: '28P01' }),
    Object.assign(new Error('database "nope" does not exist'), { code: '3D000' }),
    Object.assign(new Error('syntax error'), { code: '42601' }),
    new CairnError(ErrorCode.INVALID_CONFIG, 'bad'),
    new CairnError(ErrorCode.BACKEND_NONCONFORMANT, 'no create-only writes'),
    new CairnError(ErrorCode.SCHEMA_TOO_NEW, 'newer'),
    // A fatal code stays fatal whatever its cause.
    new CairnError(ErrorCode.INVALID_CONFIG, 'bad', { cause: systemError('ECONNREFUSED') }),
    new CairnError(ErrorCode.OBJECT_STORE_ERROR, 'HeadBucket answered 403 AccessDenied'),
    new CairnError(ErrorCode.BUS_ERROR, 'creating topics failed: INVALID_REPLICATION_FACTOR'),
    new TypeError('x is not a function'),
    'a string',
    undefined,
  ]) {
    assert.equal(isWorthWaiting(e), false, `${String(e)} is not worth waiting for`)
  }
})

test('the gate retries what is worth waiting for, says so, and reports it until it succeeds', async () => {
  const logger = recording()
  const gate = createStartupGate({ logger, baseDelayMs: 1, maxDelayMs: 4 })
  assert.equal(gate.describe(), 'starting')
  let calls = 0
  const seen: string[] = []
  const result = await gate.wait('the database (postgres x)', async () => {
    calls++
    seen.push(gate.describe())
    if (calls < 4) throw systemError('ECONNREFUSED')
    return 'open'
  })
  assert.equal(result, 'open')
  assert.equal(calls, 4)
  assert.equal(seen[0], 'starting: connecting to the database (postgres x)')
  assert.match(
    seen[1] ?? '',
    /^waiting for the database \(postgres x\): connect ECONNREFUSED 127\.0\.0\.1:5432$/,
  )
  assert.equal(gate.describe(), 'starting')
  const waits = logger.lines.filter((l) => l.level === 'warn')
  assert.deepEqual(
    waits.map((l) => l.msg),
    Array(3).fill('waiting for the database (postgres x)'),
  )
  assert.deepEqual(
    waits.map((l) => (l.obj as { retry_in_ms: number }).retry_in_ms),
    [1, 2, 4],
    'backoff doubles up to the cap',
  )
  assert.ok(logger.lines.some((l) => l.level === 'info' && l.msg.endsWith('is there')))
})

test('the gate throws at once what waiting cannot fix', async () => {
  const gate = createStartupGate({ logger: recording(), baseDelayMs: 1 })
  let calls = 0
  await assert.rejects(
    gate.wait('the database', async () => {
      calls++
      throw new CairnError(ErrorCode.SCHEMA_TOO_NEW, 'migrated by a newer cairn')
    }),
    (e) => isCairnError(e, ErrorCode.SCHEMA_TOO_NEW),
  )
  assert.equal(calls, 1)
})

test('aborting the signal ends a wait with CLOSED, without another attempt', async () => {
  const stop = new AbortController()
  const gate = createStartupGate({ logger: recording(), signal: stop.signal, baseDelayMs: 60_000 })
  let calls = 0
  const waiting = gate.wait('the bus (kafka://127.0.0.1:1)', async () => {
    calls++
    throw new CairnError(ErrorCode.BUS_UNAVAILABLE, 'down', { retryable: true })
  })
  await new Promise((r) => setTimeout(r, 20))
  stop.abort()
  await assert.rejects(waiting, (e) => isCairnError(e, ErrorCode.CLOSED))
  assert.equal(calls, 1)
})

test('aborting the signal ends an attempt that hangs (a connect to a silent host)', async () => {
  const stop = new AbortController()
  const gate = createStartupGate({ logger: recording(), signal: stop.signal })
  const waiting = gate.wait('the database', () => new Promise<never>(() => {}))
  await new Promise((r) => setTimeout(r, 20))
  assert.equal(gate.describe(), 'starting: connecting to the database')
  stop.abort()
  await assert.rejects(waiting, (e) => isCairnError(e, ErrorCode.CLOSED))
})
