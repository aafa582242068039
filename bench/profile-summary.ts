// Summarises a V8 CPU profile (`.cpuprofile`, from `npm run bench -- --cpu-prof`): where the
// process spent its time, by function (self time) and by package or source area.
//   node bench/profile-summary.ts <file.cpuprofile> [--top 25]
import { readFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'

type Node = {
  readonly id: number
  readonly callFrame: {
    readonly functionName: string
    readonly url: string
    readonly lineNumber: number
  }
  readonly children?: readonly number[]
}
type Profile = {
  readonly nodes: readonly Node[]
  readonly samples: readonly number[]
  readonly timeDeltas: readonly number[]
}

/** The area a source file belongs to: a cairn folder, a package, node's internals, or V8. */
const areaOf = (url: string): string => {
  if (url === '') return '(native / V8)'
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)
  if (pkg !== null) return `npm:${pkg[1] as string}`
  const own = /\/(src|bench)\/([^/]+)\//.exec(url)
  if (own !== null) return `cairn:${own[1] as string}/${own[2] as string}`
  if (url.startsWith('node:')) return 'node:internals'
  return url.replace(/^.*\//, '')
}

const main = async (): Promise<void> => {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { top: { type: 'string', default: '25' } },
  })
  const file = positionals[0]
  if (file === undefined) {
    console.error('usage: node bench/profile-summary.ts <file.cpuprofile> [--top N]')
    process.exitCode = 2
    return
  }
  const profile = JSON.parse(await readFile(file, 'utf8')) as Profile
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const self = new Map<number, number>()
  let total = 0
  let idle = 0
  profile.samples.forEach((id, i) => {
    const dt = profile.timeDeltas[i] ?? 0
    // Waiting is not work: percentages are of the busy time.
    if (byId.get(id)?.callFrame.functionName === '(idle)') {
      idle += dt
      return
    }
    self.set(id, (self.get(id) ?? 0) + dt)
    total += dt
  })
  const label = (n: Node): string => {
    const { functionName, url, lineNumber } = n.callFrame
    const name = functionName === '' ? '(anonymous)' : functionName
    const where =
      url === ''
        ? ''
        : ` ${url.replace(/^.*\/(src|bench|node_modules)\//, '$1/')}:${lineNumber + 1}`
    return `${name}${where}`
  }
  const byFunction = new Map<string, number>()
  const byArea = new Map<string, number>()
  for (const [id, us] of self) {
    const n = byId.get(id)
    if (n === undefined) continue
    byFunction.set(label(n), (byFunction.get(label(n)) ?? 0) + us)
    byArea.set(areaOf(n.callFrame.url), (byArea.get(areaOf(n.callFrame.url)) ?? 0) + us)
  }
  // Inclusive time of cairn's own functions: a sample counts once for every distinct cairn
  // function on its stack, so a caller shows what it costs with everything it calls.
  const parent = new Map<number, number>()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const inclusive = new Map<string, number>()
  for (const [id, us] of self) {
    const seen = new Set<string>()
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const n = byId.get(at)
      if (n === undefined || !/\/src\//.test(n.callFrame.url)) continue
      if (n.callFrame.url.includes('node_modules')) continue
      seen.add(label(n))
    }
    for (const l of seen) inclusive.set(l, (inclusive.get(l) ?? 0) + us)
  }
  const pct = (us: number) => `${((100 * us) / Math.max(1, total)).toFixed(1).padStart(5)} %`
  const top = Number(values.top)
  console.log(
    `${file}: ${(total / 1e6).toFixed(2)} s busy, ${(idle / 1e6).toFixed(2)} s idle; percentages of busy time`,
  )
  console.log('\nby area (self time)')
  for (const [area, us] of [...byArea].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`${pct(us)}  ${area}`)
  }
  console.log('\nby function (self time)')
  for (const [fn, us] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`${pct(us)}  ${fn}`)
  }
  console.log('\nby cairn function (total time: itself and what it calls)')
  for (const [fn, us] of [...inclusive].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(`${pct(us)}  ${fn}`)
  }
}

await main()
