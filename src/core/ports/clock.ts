/** Time, injectable so tests can move it. `now()` is epoch milliseconds (UTC). */
export type Clock = {
  now(): number
}

export const systemClock: Clock = Object.freeze({ now: () => Date.now() })
