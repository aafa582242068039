/**
 * What a bearer token may do. `read`: the GET routes of the API and the console's data; `write`:
 * the domain's commands; `operate`: the operator's actions (retry, skip). A token without
 * scopes in its entry has all three (as before scopes existed).
 */
export const SCOPES = ['read', 'write', 'operate'] as const
export type Scope = (typeof SCOPES)[number]

/** One entry of `OMS_API_TOKENS`: the secret, what it may do, and its optional non-secret name. */
export type ApiToken = {
  readonly token: string
  readonly scopes: readonly Scope[]
  /** Names the actor (`token:<name>`); without it, a digest of the token does. */
  readonly name?: string
}

const NAME = /^([a-z][a-z0-9_.-]{0,63})=([^=].*)$/i
const SCOPE_LIST = /^[a-z]+(\+[a-z]+)*$/

/**
 * `[<name>=]<token>[:<scope>[+<scope>…]]`. The text after the last `:` is a scope list when it
 * reads like one (lower-case words joined by `+`); a word that is not a scope is a configuration
 * error rather than part of the token, so that a typo never widens what a token may do. A name
 * is the text before the first `=` when it is a word (base64 has `=` only at its end).
 */
export const parseApiToken = (entry: string): ApiToken | { readonly problem: string } => {
  let rest = entry
  let name: string | undefined
  const named = NAME.exec(rest)
  if (named !== null) {
    name = named[1]
    rest = named[2] as string
  }
  let scopes: readonly Scope[] = SCOPES
  const colon = rest.lastIndexOf(':')
  const suffix = colon < 0 ? '' : rest.slice(colon + 1)
  if (colon > 0 && SCOPE_LIST.test(suffix)) {
    const words = suffix.split('+')
    const unknown = words.filter((w) => !(SCOPES as readonly string[]).includes(w))
    if (unknown.length > 0) {
      return {
        problem: `unknown scope ${unknown.join(', ')} (use ${SCOPES.join(', ')}, joined by +)`,
      }
    }
    scopes = SCOPES.filter((s) => words.includes(s))
    rest = rest.slice(0, colon)
  }
  if (rest.length < 16) return { problem: 'every token must have at least 16 characters' }
  return { token: rest, scopes, ...(name === undefined ? {} : { name }) }
}

/** A token given as a bare string has every scope. */
export const apiTokenOf = (t: string | ApiToken): ApiToken =>
  typeof t === 'string' ? { token: t, scopes: SCOPES } : t

/** The scope a route asks for: its declared one, else `read` for a GET (or HEAD), `write` otherwise. */
export const scopeOf = (op: { readonly method: string; readonly scope?: Scope }): Scope =>
  op.scope ?? (op.method === 'GET' || op.method === 'HEAD' ? 'read' : 'write')
