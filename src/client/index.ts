import { randomUUID } from 'node:crypto'
import type { Static, TSchema } from 'typebox'
import type { Operation, Problem } from '../http/contract.ts'
import { OMS_OPERATIONS } from '../http/oms-contract.ts'

/**
 * A typed client for cairn's OMS (`cairn/client`), typed from the same schemas the server
 * validates with (http/oms-contract.ts): one method per operation, named by its operationId.
 *
 * - Writes carry an `Idempotency-Key` by default (a fresh UUID per call, or yours): a request
 *   retried after a lost answer names the same command, so the client retries network failures
 *   and 503s on its own, and nothing is stored twice.
 * - A problem+json answer is thrown as a `CairnProblem` (status, code, problems with pointers).
 * - `pages(...)` walks a listing; `waitForCommand(id)` long-polls a command to its outcome.
 */

type Ops = (typeof OMS_OPERATIONS)[number]
export type OperationId = Ops['operationId']
type OpOf<Id extends OperationId> = Extract<Ops, { operationId: Id }>

type StaticOf<S> = S extends TSchema ? Static<S> : never

/** What a call of `O` takes: its path parameters, query, body, and call options. */
export type Input<O> = (O extends { params: infer P } ? { params: StaticOf<P> } : unknown) &
  (O extends { query: infer Q } ? { query?: Partial<StaticOf<Q>> } : unknown) &
  (O extends { body: infer B } ? { body: StaticOf<B> } : unknown) &
  CallOptions

/** What a call takes beyond its schemas: a listing of instances takes property filters. */
type Extra<Id> = Id extends 'listInstances'
  ? {
      /** Any other query parameter of this listing is a filter: a property and its value. */
      readonly filters?: Readonly<Record<string, string | number | boolean>>
    }
  : unknown

/** What a call of `O` answers: the body of its 2xx responses. */
export type Output<O> = O extends { responses: infer R }
  ? | (R extends { '200': { schema: infer S } } ? StaticOf<S> : never)
    | (R extends { '202': { schema: infer S } } ? StaticOf<S> : never)
  : never

export type CallOptions = {
  /** A write's Idempotency-Key (default: a fresh UUID per call). */
  readonly idempotencyKey?: string
  /** `Prefer: wait=N`: answer with the command's outcome once decided, at most N seconds. */
  readonly waitSeconds?: number
  /** `If-Match: "N"` (writes), `If-None-Match` (reads). */
  readonly ifMatch?: number
  readonly headers?: Readonly<Record<string, string>>
  readonly signal?: AbortSignal
}

/** A response as the client saw it. */
export type Answer<T> = {
  readonly status: number
  readonly headers: Headers
  readonly body: T
}

/** An answer that is an error: the server's problem details, typed. */
export class CairnProblem extends Error {
  readonly status: number
  readonly code: string
  readonly problem: Problem & Readonly<Record<string, unknown>>
  constructor(status: number, problem: Problem & Readonly<Record<string, unknown>>) {
    super(`${status} ${problem.code}: ${problem.detail ?? problem.title}`)
    this.name = 'CairnProblem'
    this.status = status
    this.code = problem.code
    this.problem = problem
  }
}

export type ClientOptions = {
  /** e.g. `http://127.0.0.1:8000` */
  readonly baseUrl: string
  /** A bearer token (one of OMS_API_TOKENS). */
  readonly token?: string
  /** Retries of a write after a network failure or a 503 (same Idempotency-Key); default 3. */
  readonly retries?: number
  readonly fetch?: typeof fetch
}

type Methods = {
  readonly [Id in OperationId]: (
    input: Input<OpOf<Id>> & Extra<Id>,
  ) => Promise<Answer<Output<OpOf<Id>>>>
}

type CommandStatus = Output<OpOf<'getCommand'>>

export type CairnClient = Methods & {
  /** Calls an operation by id (what the named methods do). */
  call<Id extends OperationId>(
    id: Id,
    input: Input<OpOf<Id>> & Extra<Id>,
  ): Promise<Answer<Output<OpOf<Id>>>>
  /** The command's status once it is COMPLETED or FAILED (long polls of Prefer: wait). */
  waitForCommand(
    commandId: string,
    options?: { readonly timeoutMs?: number; readonly signal?: AbortSignal },
  ): Promise<CommandStatus>
  /** Every item of a listing, page after page. */
  pages<Id extends 'listDatabases' | 'listClasses' | 'listInstances'>(
    id: Id,
    input: Input<OpOf<Id>>,
  ): AsyncIterable<Output<OpOf<Id>> extends { items: (infer T)[] } ? T : never>
}

const WRITES = new Set(['POST', 'PUT', 'DELETE'])
const RETRY_PAUSE_MS = [100, 400, 1_000]

const pathOf = (op: Operation, params: Readonly<Record<string, unknown>> | undefined): string =>
  op.path.replace(/\{([A-Za-z0-9_]+)\}/g, (_, name: string) => {
    const v = params?.[name]
    if (v === undefined) throw new TypeError(`${op.operationId}: path parameter ${name} missing`)
    return encodeURIComponent(text(v))
  })

/** A path or query value as text (numbers and booleans as JSON spells them). */
const text = (v: unknown): string => (typeof v === 'string' ? v : JSON.stringify(v))

/** A client of the OMS at `baseUrl`. */
export const createClient = (options: ClientOptions): CairnClient => {
  const base = options.baseUrl.replace(/\/+$/, '')
  const doFetch = options.fetch ?? fetch
  const retries = options.retries ?? 3
  const byId = new Map<string, Operation>(OMS_OPERATIONS.map((op) => [op.operationId, op]))

  const call = async (id: string, raw: unknown): Promise<Answer<unknown>> => {
    const op = byId.get(id)
    if (op === undefined) throw new TypeError(`no operation ${id}`)
    const input = (raw ?? {}) as {
      params?: Record<string, unknown>
      query?: Record<string, unknown>
      filters?: Record<string, unknown>
      body?: unknown
    } & CallOptions
    const url = new URL(base + pathOf(op, input.params))
    for (const [k, v] of Object.entries({ ...input.filters, ...input.query })) {
      if (v !== undefined && v !== null) url.searchParams.set(k, text(v))
    }
    const write = WRITES.has(op.method)
    const headers: Record<string, string> = { accept: 'application/json', ...input.headers }
    if (options.token !== undefined) headers['authorization'] = `Bearer ${options.token}`
    if (write) headers['idempotency-key'] = input.idempotencyKey ?? randomUUID()
    if (input.waitSeconds !== undefined) headers['prefer'] = `wait=${input.waitSeconds}`
    if (input.ifMatch !== undefined) {
      headers[write ? 'if-match' : 'if-none-match'] = `"${input.ifMatch}"`
    }
    let body: string | undefined
    if (input.body !== undefined) {
      body = JSON.stringify(input.body)
      headers['content-type'] = 'application/json'
    }
    for (let attempt = 0; ; attempt++) {
      let response: Response
      try {
        response = await doFetch(url, {
          method: op.method,
          headers,
          ...(body === undefined ? {} : { body }),
          ...(input.signal === undefined ? {} : { signal: input.signal }),
        })
      } catch (error) {
        // The request may or may not have arrived: the same key makes a retry safe.
        if (!write || attempt >= retries || input.signal?.aborted === true) throw error
        await pause(attempt)
        continue
      }
      if (response.status === 503 && write && attempt < retries) {
        await response.body?.cancel()
        await pause(attempt, response.headers.get('retry-after'))
        continue
      }
      const text = await response.text()
      const type = response.headers.get('content-type') ?? ''
      const parsed: unknown =
        text.length > 0 && /json/.test(type) ? (JSON.parse(text) as unknown) : text
      if (response.status >= 400) {
        const problem =
          typeof parsed === 'object' && parsed !== null && 'code' in parsed
            ? (parsed as Problem)
            : {
                type: 'about:blank',
                title: response.statusText,
                status: response.status,
                code: `http_${response.status}`,
                detail: typeof parsed === 'string' ? parsed.slice(0, 500) : '',
              }
        throw new CairnProblem(response.status, problem)
      }
      return { status: response.status, headers: response.headers, body: parsed }
    }
  }

  const waitForCommand: CairnClient['waitForCommand'] = async (commandId, o = {}) => {
    const deadline = Date.now() + (o.timeoutMs ?? 60_000)
    for (;;) {
      const left = Math.ceil((deadline - Date.now()) / 1000)
      const r = (await call('getCommand', {
        params: { command_id: commandId },
        waitSeconds: Math.max(0, Math.min(left, 60)),
        ...(o.signal === undefined ? {} : { signal: o.signal }),
      })) as Answer<CommandStatus>
      if (r.body.status === 'COMPLETED' || r.body.status === 'FAILED') return r.body
      if (Date.now() >= deadline) {
        throw new Error(`command ${commandId} is still ${r.body.status} after the timeout`)
      }
    }
  }

  async function* pages(id: string, raw: unknown): AsyncIterable<unknown> {
    const input = (raw ?? {}) as { query?: Record<string, unknown> }
    let after = input.query?.['after']
    for (;;) {
      const r = (await call(id, {
        ...(raw as object),
        query: { ...input.query, ...(after === undefined ? {} : { after }) },
      })) as Answer<{ items: unknown[]; next: string | null }>
      yield* r.body.items
      if (r.body.next === null) return
      after = r.body.next
    }
  }

  const methods = Object.fromEntries(
    OMS_OPERATIONS.map((op) => [op.operationId, (input: unknown) => call(op.operationId, input)]),
  )
  return { ...methods, call, waitForCommand, pages } as unknown as CairnClient
}

const pause = (attempt: number, retryAfter?: string | null): Promise<void> => {
  const told = retryAfter === null || retryAfter === undefined ? NaN : Number(retryAfter) * 1000
  const ms = Number.isFinite(told)
    ? Math.min(told, 5_000)
    : (RETRY_PAUSE_MS[attempt] ?? RETRY_PAUSE_MS.at(-1) ?? 1_000)
  return new Promise((resolve) => setTimeout(resolve, ms))
}

export type { Problem } from '../http/contract.ts'
