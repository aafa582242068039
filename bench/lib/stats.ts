import { createHistogram } from 'node:perf_hooks'
import type { RecordableHistogram } from 'node:perf_hooks'

/** Latency percentiles in milliseconds, from an HDR histogram of nanoseconds. */
export type Latency = {
  readonly count: number
  readonly p50: number
  readonly p99: number
  readonly p999: number
  readonly max: number
  readonly mean: number
}

/**
 * Node's `perf_hooks.createHistogram` is an HDR histogram (3 significant digits) of integers:
 * latencies are recorded in nanoseconds.
 */
export type LatencyRecorder = {
  record(ns: number): void
  summary(): Latency
}

export const createLatencyRecorder = (): LatencyRecorder => {
  const h: RecordableHistogram = createHistogram({
    lowest: 1,
    highest: 3_600_000_000_000,
    figures: 3,
  })
  const ms = (ns: number): number => Math.round(ns / 1_000) / 1_000
  return {
    record(ns) {
      h.record(Math.max(1, Math.round(ns)))
    },
    summary() {
      return {
        count: h.count,
        p50: ms(h.percentile(50)),
        p99: ms(h.percentile(99)),
        p999: ms(h.percentile(99.9)),
        max: ms(h.max),
        mean: ms(h.mean),
      }
    },
  }
}

/** Nanoseconds since an arbitrary origin, monotonic. */
export const nowNs = (): number => Number(process.hrtime.bigint())

/** mulberry32: a small seeded PRNG, so every run draws the same aggregates and payloads. */
export const createRandom = (seed: number): (() => number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296
  }
}

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'

/** A printable string of `length` characters drawn from `random` (1 byte each in UTF-8). */
export const randomText = (random: () => number, length: number): string => {
  let s = ''
  for (let i = 0; i < length; i++) s += ALPHABET[Math.floor(random() * ALPHABET.length)]
  return s
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
