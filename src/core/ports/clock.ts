/** Time, injectable so tests can move it. `now()` is epoch milliseconds (UTC). */
export type Clock = {
  now(): number
}

export const systemClock: Clock = Object.freeze({ now: () => Date.now() })

/**
 * The clock that stamps segment keys: the sequence allocator's database (PostgreSQL's
 * `clock_timestamp()`, PGlite's in embedded mode). `now()` reads it, in microseconds since the
 * epoch; it may fail or hang while the database is away.
 */
export type KeyClock = {
  now(): Promise<number>
}
