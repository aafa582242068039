import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { LogFn, Logger } from '../../src/core/ports/logger.ts'
import { createKeyTime } from '../../src/publisher/key-time.ts'

/** A key clock and a monotonic clock moved by hand; a reading takes `rttMs` of monotonic time. */
const world = (options: { keyStartUs: number; wallOffsetMs?: number }) => {
  let mono = 1_000
  let keyUs = options.keyStartUs
  let rttMs = 2
  let failure: Error | null = null
  const errors: string[] = []
  const error: LogFn = (_fields, message) => void errors.push(message)
  const logger: Logger = {
    debug: () => {},
    info: () => {},
    warn: () => {},
    error,
    child: () => logger,
  }
  const advance = (ms: number): void => {
    mono += ms
    keyUs += ms * 1000
  }
  const keyTime = createKeyTime({
    source: {
      now: async () => {
        if (failure !== null) throw failure
        // The key clock is read half way through the round trip.
        advance(rttMs / 2)
        const read = keyUs
        advance(rttMs / 2)
        return read
      },
    },
    maxUncertaintyMs: 100,
    maxAgeMs: 10_000,
    monotonic: () => mono,
    wall: () => keyUs / 1000 + (options.wallOffsetMs ?? 0),
    logger,
  })
  return {
    keyTime,
    errors,
    advance,
    keyNowUs: () => keyUs,
    setRtt: (ms: number) => void (rttMs = ms),
    fail: (e: Error | null) => void (failure = e),
    stepKeyClock: (ms: number) => void (keyUs += ms * 1000),
  }
}

test('before any reading nothing can be settled, and the reason says so', () => {
  const w = world({ keyStartUs: 1_800_000_000_000_000 })
  assert.equal(w.keyTime.lowerBoundUs(), null)
  assert.equal(w.keyTime.status().trusted, false)
  assert.match(w.keyTime.status().reason ?? '', /not been read/)
})

test('the lower bound never passes the key clock and trails it by at most the round trip', async () => {
  const w = world({ keyStartUs: 1_800_000_000_000_000, wallOffsetMs: 20 * 60_000 })
  w.setRtt(40)
  await w.keyTime.measure()
  for (const step of [0, 1, 250, 3_000, 6_000]) {
    w.advance(step)
    const lower = w.keyTime.lowerBoundUs()
    assert.ok(lower !== null)
    assert.ok(lower <= w.keyNowUs(), 'not ahead of the key clock')
    assert.ok(w.keyNowUs() - lower <= 40_000, 'behind by at most the round trip')
  }
  // This host's clock is 20 minutes ahead: reported, and it changes nothing above.
  assert.equal(w.keyTime.status().offsetMs, 20 * 60_000)
  assert.equal(w.keyTime.status().uncertaintyMs, 40)
})

test('a reading too slow to be precise is not used; a stale one stops settling', async () => {
  const w = world({ keyStartUs: 1_800_000_000_000_000 })
  await w.keyTime.measure()
  w.setRtt(500)
  await w.keyTime.measure()
  // The good reading still stands while fresh.
  assert.notEqual(w.keyTime.lowerBoundUs(), null)
  w.advance(10_001)
  assert.equal(w.keyTime.lowerBoundUs(), null)
  assert.match(w.keyTime.status().reason ?? '', /took 500 ms, more than the 100 ms tolerated/)
})

test('a key clock that cannot be read stops settling once the last reading is stale, and resumes', async () => {
  const w = world({ keyStartUs: 1_800_000_000_000_000 })
  await w.keyTime.measure()
  w.fail(new Error('connection refused'))
  await w.keyTime.measure()
  w.advance(11_000)
  assert.equal(w.keyTime.status().trusted, false)
  assert.match(w.keyTime.status().reason ?? '', /connection refused/)
  w.fail(null)
  await w.keyTime.measure()
  assert.equal(w.keyTime.status().trusted, true)
  assert.equal(w.keyTime.status().reason, null)
})

test('a reading that hangs is abandoned once the last reading would be stale', async () => {
  let calls = 0
  let mono = 0
  const keyTime = createKeyTime({
    source: {
      now: () => {
        calls++
        return calls === 1 ? new Promise<number>(() => {}) : Promise.resolve(1_000_000)
      },
    },
    maxUncertaintyMs: 100,
    monotonic: () => mono,
  })
  void keyTime.measure()
  void keyTime.measure()
  assert.equal(calls, 1, 'concurrent calls share one reading')
  mono += 5_000
  void keyTime.measure()
  assert.equal(calls, 1, 'not abandoned yet')
  mono += 5_001
  await keyTime.measure()
  assert.equal(calls, 2)
  assert.equal(keyTime.status().trusted, true)
})

test('a key clock that steps back is reported loudly', async () => {
  const w = world({ keyStartUs: 1_800_000_000_000_000 })
  await w.keyTime.measure()
  w.advance(1_000)
  await w.keyTime.measure()
  assert.deepEqual(w.errors, [])
  w.stepKeyClock(-5_000)
  await w.keyTime.measure()
  assert.equal(w.errors.length, 1)
  assert.match(w.errors[0] ?? '', /stepped back/)
})
