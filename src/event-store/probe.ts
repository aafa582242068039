import { randomBytes } from 'node:crypto'
import { CairnError, ErrorCode } from '../core/errors.ts'
import type { Logger } from '../core/ports/logger.ts'
import type { ObjectStore } from '../core/ports/object-store.ts'
import { PROBES_PREFIX } from './keys.ts'

/**
 * The conformance probe (W2): cairn's guarantees rest on create-only and conditional writes, which
 * some S3-compatible servers accept and ignore. At start, on the configured bucket:
 * - `concurrent-create-only`: N concurrent create-only PUTs of one key give exactly one winner,
 *   and the stored body is the winner's;
 * - `create-only-existing`: a create-only PUT of an existing key is refused;
 * - `conditional-missing`: a conditional write (If-Match) on a missing key fails;
 * - `conditional-stale`: a conditional write with an outdated tag fails.
 * The probe writes a few small objects under `probes/`.
 */
export type ProbeReport = {
  readonly ok: boolean
  readonly failed: readonly string[]
  readonly checks: readonly {
    readonly name: string
    readonly ok: boolean
    readonly detail: string
  }[]
}

export const probeObjectStore = async (
  store: ObjectStore,
  concurrency = 8,
): Promise<ProbeReport> => {
  const run = `${PROBES_PREFIX}${new Date().toISOString().slice(0, 10)}/${randomBytes(8).toString('hex')}/`
  const enc = new TextEncoder()
  const checks: { name: string; ok: boolean; detail: string }[] = []

  const race = `${run}race.json`
  const outcomes = await Promise.all(
    Array.from({ length: concurrency }, (_, i) =>
      store.putIfAbsent(race, enc.encode(`{"writer":${i}}`)),
    ),
  )
  const winners = outcomes.flatMap((o, i) => (o === 'created' ? [i] : []))
  const stored = await store.get(race)
  const storedWriter =
    stored === null
      ? null
      : (JSON.parse(new TextDecoder().decode(stored.body)) as { writer: number }).writer
  checks.push({
    name: 'concurrent-create-only',
    ok: winners.length === 1 && storedWriter === winners[0],
    detail: `${concurrency} concurrent create-only PUTs of one key: ${winners.length} reported created; stored body of writer ${String(storedWriter)}`,
  })

  const again = await store.putIfAbsent(race, enc.encode('{"writer":-1}'))
  checks.push({
    name: 'create-only-existing',
    ok: again === 'exists',
    detail: `create-only PUT of an existing key answered ${again}`,
  })

  const missing = await store.putIfMatch(
    `${run}missing.json`,
    enc.encode('{}'),
    '"cairn-probe-no-such-etag"',
  )
  checks.push({
    name: 'conditional-missing',
    ok: missing.outcome === 'precondition_failed',
    detail: `conditional write on a missing key answered ${missing.outcome}`,
  })

  const cas = `${run}cas.json`
  const first = await store.putIfMatch(cas, enc.encode('{"v":1}'), null)
  const second =
    first.outcome === 'written'
      ? await store.putIfMatch(cas, enc.encode('{"v":2}'), first.etag)
      : first
  const stale =
    first.outcome === 'written'
      ? await store.putIfMatch(cas, enc.encode('{"v":3}'), first.etag)
      : first
  checks.push({
    name: 'conditional-stale',
    ok:
      first.outcome === 'written' &&
      second.outcome === 'written' &&
      stale.outcome === 'precondition_failed',
    detail: `create ${first.outcome}, swap on current tag ${second.outcome}, swap on stale tag ${stale.outcome}`,
  })

  const failed = checks.filter((c) => !c.ok).map((c) => c.name)
  return { ok: failed.length === 0, failed, checks }
}

/**
 * Runs the probe and refuses a backend that fails it, naming the failed checks, unless the
 * operator explicitly allows it (EVENT_STORE_ALLOW_NONCONFORMANT_BACKEND=true), in which case
 * it only logs an error.
 */
export const assertConformant = async (
  store: ObjectStore,
  options: { readonly allowNonconformant?: boolean; readonly logger?: Logger } = {},
): Promise<ProbeReport> => {
  const report = await probeObjectStore(store)
  if (report.ok) {
    options.logger?.info({ backend: store.describe }, 'object store passed the conformance probe')
    return report
  }
  const lines = report.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`)
  const message =
    `the object store ${store.describe} failed the conformance probe (${report.failed.join(', ')}): ${lines.join('; ')}. ` +
    'cairn needs atomic create-only (If-None-Match: *) and conditional (If-Match) writes to keep events immutable.'
  if (options.allowNonconformant === true) {
    options.logger?.error(
      { failed: report.failed },
      `${message} Continuing: EVENT_STORE_ALLOW_NONCONFORMANT_BACKEND is set.`,
    )
    return report
  }
  throw new CairnError(
    ErrorCode.BACKEND_NONCONFORMANT,
    `${message} Set EVENT_STORE_ALLOW_NONCONFORMANT_BACKEND=true to override.`,
    {
      details: { failed: report.failed },
    },
  )
}
