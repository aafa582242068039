import { readFileSync } from 'node:fs'
import type { ConsoleAssets } from '../http/console.ts'

/** The console's files, beside the http module (src/ from the sources, dist/ once built). */
const DIR = new URL('../http/console/', import.meta.url)

let loaded: ConsoleAssets | undefined

/** The console's static files, read once. */
export const consoleAssets = (): ConsoleAssets => {
  loaded ??= {
    html: readFileSync(new URL('index.html', DIR), 'utf8'),
    script: readFileSync(new URL('console.js', DIR), 'utf8'),
    style: readFileSync(new URL('console.css', DIR), 'utf8'),
  }
  return loaded
}
