/**
 * A small path router: `/api/v1/databases/:db` patterns, percent-decoded parameters. Matching is
 * by segment count, then literal segments; the first match wins. A path whose encoding is broken
 * does not match (the caller answers 400).
 */
export type RouteMatch<H> = {
  readonly handler: H
  readonly params: Readonly<Record<string, string>>
  readonly pattern: string
}

type Route<H> = {
  readonly method: string
  readonly pattern: string
  readonly segments: readonly string[]
  readonly handler: H
}

export type Router<H> = {
  add(method: string, pattern: string, handler: H): void
  /** The route for this method and path; `allowed` lists the methods of a path that matched otherwise. */
  match(
    method: string,
    path: string,
  ): { readonly found: RouteMatch<H> } | { readonly allowed: readonly string[] } | null
}

const split = (path: string): string[] => path.split('/').filter((s) => s !== '')

export const createRouter = <H>(): Router<H> => {
  const routes: Route<H>[] = []
  const matchSegments = (route: Route<H>, parts: readonly string[]) => {
    if (route.segments.length !== parts.length) return null
    const params: Record<string, string> = {}
    for (let i = 0; i < parts.length; i++) {
      const seg = route.segments[i] as string
      const part = parts[i] as string
      if (seg.startsWith(':')) params[seg.slice(1)] = part
      else if (seg !== part) return null
    }
    return params
  }
  return {
    add(method, pattern, handler) {
      routes.push({ method, pattern, segments: split(pattern), handler })
    },
    match(method, path) {
      let parts: string[]
      try {
        parts = split(path).map((p) => decodeURIComponent(p))
      } catch {
        return null
      }
      const allowed: string[] = []
      for (const route of routes) {
        const params = matchSegments(route, parts)
        if (params === null) continue
        if (route.method === method)
          return { found: { handler: route.handler, params, pattern: route.pattern } }
        allowed.push(route.method)
      }
      return allowed.length > 0 ? { allowed } : null
    },
  }
}
