/**
 * Exponential backoff with full jitter: attempt 1 waits up to `baseMs`, each next attempt up to
 * twice as long, never more than `maxMs`. `random` is injectable for tests.
 */
export const backoffMs = (
  attempt: number,
  options: {
    readonly baseMs?: number
    readonly maxMs?: number
    readonly random?: () => number
  } = {},
): number => {
  const base = options.baseMs ?? 200
  const max = options.maxMs ?? 30_000
  const cap = Math.min(max, base * 2 ** Math.max(0, attempt - 1))
  return Math.round(cap * (options.random ?? Math.random)())
}
