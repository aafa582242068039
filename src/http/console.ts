import type { HttpResponse } from './problem.ts'
import type { RouteHandler } from './pipeline.ts'
import type { Router } from './router.ts'

/**
 * The operator console: three static files (src/http/console/), no build step. The page asks the
 * operator's API for its data with the bearer token the operator types in; it holds no cookie,
 * so there is no CSRF surface, and the policy below lets it run only its own script.
 */
export type ConsoleAssets = {
  readonly html: string
  readonly script: string
  readonly style: string
}

const HEADERS = {
  // Only this origin's files: no inline script or style, no other origin, no framing.
  'content-security-policy':
    "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; object-src 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  // Revalidated each time: a new version of cairn serves its new console at once.
  'cache-control': 'no-cache',
}

const file = (type: string, body: string): RouteHandler => {
  const response: HttpResponse = {
    status: 200,
    headers: { ...HEADERS, 'content-type': `${type}; charset=utf-8` },
    body,
  }
  return async () => response
}

/** Serves the console at /console (the page), /console/console.js and /console/console.css. */
export const addConsoleRoutes = (router: Router<RouteHandler>, assets: ConsoleAssets): void => {
  router.add('GET', '/console', file('text/html', assets.html))
  router.add('GET', '/console/console.js', file('text/javascript', assets.script))
  router.add('GET', '/console/console.css', file('text/css', assets.style))
}
