import type { KeyClock } from '../core/ports/clock.ts'
import { silentLogger } from '../core/ports/logger.ts'
import type { Logger } from '../core/ports/logger.ts'

export type KeyTimeOptions = {
  /** The clock that stamps segment keys (the allocator's database). */
  readonly source: KeyClock
  /**
   * The largest uncertainty of a reading accepted (its round trip, ms). A reading that took longer
   * is not used: the watermark rests on the last good one while it is fresh.
   */
  readonly maxUncertaintyMs: number
  /**
   * A reading older than this no longer counts (ms): with no fresh reading the publisher stops
   * settling. Default 10,000.
   */
  readonly maxAgeMs?: number
  /** Monotonic milliseconds (default `performance.now`). */
  readonly monotonic?: () => number
  /** This host's wall clock, epoch ms (default `Date.now`): only to report its offset. */
  readonly wall?: () => number
  readonly logger?: Logger
}

export type KeyTimeStatus = {
  /** A fresh reading is there: the watermark can be computed. */
  readonly trusted: boolean
  /** Why not, when not trusted. */
  readonly reason: string | null
  /** This host's clock minus the key clock, ms, as last measured (null before the first). */
  readonly offsetMs: number | null
  /** The round trip of the reading the watermark rests on, ms. */
  readonly uncertaintyMs: number | null
}

export type KeyTime = {
  /** Reads the key clock once; concurrent calls share one reading. Never rejects. */
  measure(): Promise<void>
  /** How long ago (ms, monotonic) the reading in use was taken; Infinity before the first. */
  ageMs(): number
  /**
   * A time (µs since the epoch) the key clock has certainly passed, or null when no reading can
   * be trusted. Taken from the last reading and the monotonic time elapsed since, so no wall
   * clock of this host enters it.
   */
  lowerBoundUs(): number | null
  status(): KeyTimeStatus
}

/**
 * The publisher's view of the clock that stamps segment keys. A reading `k` of the key clock is
 * taken between the monotonic instants `t0` and `t1` of its request, so at any later monotonic
 * instant `t` the key clock shows at least `k + (t − t1)`: a lower bound that needs neither this
 * host's wall clock nor an assumption about its skew. Its error is at most the round trip
 * `t1 − t0`, which only makes the watermark later, never earlier (docs/publisher.md).
 */
export const createKeyTime = (options: KeyTimeOptions): KeyTime => {
  const mono = options.monotonic ?? (() => performance.now())
  const wall = options.wall ?? Date.now
  const maxAgeMs = options.maxAgeMs ?? 10_000
  const log = options.logger ?? silentLogger
  let reading: { readonly us: number; readonly at: number; readonly rttMs: number } | null = null
  let offsetMs: number | null = null
  let failure: string | null = 'the database clock has not been read yet'
  let inFlight: Promise<void> | null = null
  let inFlightSince = 0

  const measureOnce = async (): Promise<void> => {
    const t0 = mono()
    const w0 = wall()
    let us: number
    try {
      us = await options.source.now()
    } catch (error) {
      failure = `the database clock could not be read: ${(error as Error).message}`
      return
    }
    const t1 = mono()
    const w1 = wall()
    if (!Number.isFinite(us)) {
      failure = `the database clock gave no time (${String(us)})`
      return
    }
    const rttMs = t1 - t0
    offsetMs = Math.round((w0 + w1) / 2 - us / 1000)
    if (rttMs > options.maxUncertaintyMs) {
      failure = `reading the database clock took ${Math.round(rttMs)} ms, more than the ${options.maxUncertaintyMs} ms tolerated`
      return
    }
    if (reading !== null) {
      // The key clock moves on at least as fast as ours between readings (a tolerance for drift).
      const expectedUs = reading.us + (t0 - reading.at) * 1000
      const backMs = (expectedUs - us) / 1000
      if (backMs > 1 + (t0 - reading.at) * 0.001) {
        log.error(
          { stepped_back_ms: Math.round(backMs) },
          'the database clock stepped back: segments stamped meanwhile may sort before the checkpoint; see docs/publisher.md',
        )
      }
    }
    reading = { us, at: t1, rttMs }
    failure = null
  }

  const ageMs = (): number => (reading === null ? Number.POSITIVE_INFINITY : mono() - reading.at)

  const lowerBoundUs = (): number | null => {
    if (reading === null) return null
    const age = mono() - reading.at
    if (age > maxAgeMs) return null
    return reading.us + age * 1000
  }

  return {
    measure() {
      // A reading that hangs (the database frozen, a connection that went silent) is abandoned
      // after `maxAgeMs`, so a lost request cannot stop readings for good; if it comes back at
      // all, its round trip is beyond the tolerance and it is not used. At most one such request
      // is left behind per period, not one per cycle.
      if (inFlight === null || mono() - inFlightSince > maxAgeMs) {
        inFlightSince = mono()
        const current: Promise<void> = measureOnce().finally(() => {
          if (inFlight === current) inFlight = null
        })
        inFlight = current
      }
      return inFlight
    },
    ageMs,
    lowerBoundUs,
    status() {
      const trusted = lowerBoundUs() !== null
      const age = ageMs()
      return {
        trusted,
        reason: trusted
          ? null
          : (failure ?? `no reading of the database clock for ${Math.round(age / 1000)} s`),
        offsetMs,
        uncertaintyMs: reading === null ? null : Math.round(reading.rttMs * 10) / 10,
      }
    },
  }
}
