import type { Row, SqlQueryable } from '../core/ports/sql.ts'
import type { FieldProblem, Parsed } from './commands.ts'
import {
  describe,
  isClassId,
  isDatabaseName,
  isInstanceId,
  isPropertyName,
  isPropertyType,
  typeProblem,
} from './model.ts'
import type { PropertyDef } from './model.ts'

/**
 * Queries over the read model (migrations/003_read_model.sql). Only what is live is visible: a
 * class under the current generation of its database, an instance under the current generation
 * of its class. Lists page by id (keyset, bytewise order); `next` is an opaque cursor.
 */

export type Page<T> = { readonly items: T[]; readonly next: string | null }

export type PageOptions = { readonly limit: number; readonly after?: string | undefined }

export type DatabaseView = {
  readonly name: string
  readonly description: string | null
  readonly seq: number
  readonly created_at: string
  readonly updated_at: string
}

export type ClassView = {
  readonly db: string
  readonly id: string
  readonly label: string | null
  readonly description: string | null
  readonly properties: PropertyDef[]
  readonly seq: number
  readonly created_at: string
  readonly updated_at: string
}

export type InstanceView = {
  readonly db: string
  readonly class_id: string
  readonly id: string
  readonly data: Record<string, unknown>
  readonly seq: number
  readonly created_at: string
  readonly updated_at: string
}

export const MAX_PAGE = 1000
const MAX_FILTERS = 32

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/

const table = (schema: string, name: string): string => {
  if (!SCHEMA_NAME.test(schema))
    throw new TypeError(`invalid schema name ${JSON.stringify(schema)}`)
  return `${schema}.${name}`
}

/**
 * The cursor of a page ending at `id` is the id itself (keyset paging): any id is a place in the
 * order, so a client may also start after an id it knows.
 */
export const encodeCursor = (id: string): string => id

/** The id a cursor stands for, or null if it is not an id. */
export const decodeCursor = (cursor: string): string | null =>
  isInstanceId(cursor) || isClassId(cursor) || isDatabaseName(cursor) ? cursor : null

/** Whether `after` is a cursor these queries gave out (else a list answers an empty page). */
export const isValidCursor = (cursor: string): boolean => decodeCursor(cursor) !== null

const num = (v: unknown): number => (typeof v === 'number' ? v : Number(v))

const iso = (v: unknown): string => {
  const d = v instanceof Date ? v : new Date(String(v))
  return Number.isNaN(d.getTime()) ? String(v) : d.toISOString()
}

const json = <T>(v: unknown, fallback: T): T => {
  if (typeof v === 'string') {
    try {
      return JSON.parse(v) as T
    } catch {
      return fallback
    }
  }
  return v === null || v === undefined ? fallback : (v as T)
}

const textOrNull = (v: unknown): string | null => (typeof v === 'string' ? v : null)

const databaseView = (r: Row): DatabaseView => ({
  name: String(r.name),
  description: textOrNull(r.description),
  seq: num(r.seq),
  created_at: iso(r.created_at),
  updated_at: iso(r.updated_at),
})

const classView = (r: Row): ClassView => ({
  db: String(r.db),
  id: String(r.id),
  label: textOrNull(r.label),
  description: textOrNull(r.description),
  properties: json<PropertyDef[]>(r.properties, []),
  seq: num(r.seq),
  created_at: iso(r.created_at),
  updated_at: iso(r.updated_at),
})

const instanceView = (r: Row): InstanceView => ({
  db: String(r.db),
  class_id: String(r.class_id),
  id: String(r.id),
  data: json<Record<string, unknown>>(r.data, {}),
  seq: num(r.seq),
  created_at: iso(r.created_at),
  updated_at: iso(r.updated_at),
})

const clampLimit = (limit: number): number =>
  Number.isSafeInteger(limit) ? Math.min(Math.max(limit, 1), MAX_PAGE) : 50

/** Runs a keyset page query: `params` end with (after, limit + 1). */
const page = async <T extends { readonly id?: string; readonly name?: string }>(
  sql: SqlQueryable,
  text: string,
  params: readonly unknown[],
  opts: PageOptions,
  view: (r: Row) => T,
  keyOf: (item: T) => string,
): Promise<Page<T>> => {
  let after: string | null = null
  if (opts.after !== undefined && opts.after !== '') {
    after = decodeCursor(opts.after)
    if (after === null) return { items: [], next: null }
  }
  const limit = clampLimit(opts.limit)
  const rows = await sql.query(text, [...params, after, limit + 1])
  const items = rows.slice(0, limit).map(view)
  const last = items.at(-1)
  return {
    items,
    next: rows.length > limit && last !== undefined ? encodeCursor(keyOf(last)) : null,
  }
}

const DB_COLS = 'name, description, seq, created_at, updated_at'
const CLS_COLS =
  'c.db, c.id, c.label, c.description, c.properties, c.seq, c.created_at, c.updated_at'
const INST_COLS = 'i.db, i.class_id, i.id, i.data, i.seq, i.created_at, i.updated_at'

const liveClasses = (schema: string): string =>
  `${table(schema, 'rm_classes')} c
   JOIN ${table(schema, 'rm_databases')} d ON d.name = c.db AND d.generation = c.db_generation`

const liveInstances = (schema: string): string =>
  `${table(schema, 'rm_instances')} i
   JOIN ${liveClasses(schema)} ON c.db = i.db AND c.id = i.class_id
     AND c.generation = i.class_generation`

export const listDatabases = async (
  sql: SqlQueryable,
  schema: string,
  opts: PageOptions,
): Promise<Page<DatabaseView>> =>
  page(
    sql,
    `SELECT ${DB_COLS} FROM ${table(schema, 'rm_databases')}
     WHERE ($1::text IS NULL OR name > $1::text) ORDER BY name LIMIT $2`,
    [],
    opts,
    databaseView,
    (v) => v.name,
  )

export const getDatabase = async (
  sql: SqlQueryable,
  schema: string,
  db: string,
): Promise<DatabaseView | null> => {
  const rows = await sql.query(
    `SELECT ${DB_COLS} FROM ${table(schema, 'rm_databases')} WHERE name = $1`,
    [db],
  )
  return rows[0] === undefined ? null : databaseView(rows[0])
}

export const listClasses = async (
  sql: SqlQueryable,
  schema: string,
  db: string,
  opts: PageOptions,
): Promise<Page<ClassView>> =>
  page(
    sql,
    `SELECT ${CLS_COLS} FROM ${liveClasses(schema)}
     WHERE c.db = $1 AND ($2::text IS NULL OR c.id > $2::text) ORDER BY c.id LIMIT $3`,
    [db],
    opts,
    classView,
    (v) => v.id,
  )

export const getClass = async (
  sql: SqlQueryable,
  schema: string,
  db: string,
  classId: string,
): Promise<ClassView | null> => {
  const rows = await sql.query(
    `SELECT ${CLS_COLS} FROM ${liveClasses(schema)} WHERE c.db = $1 AND c.id = $2`,
    [db, classId],
  )
  return rows[0] === undefined ? null : classView(rows[0])
}

export type InstancePageOptions = PageOptions & {
  /** Property values the instance's data must contain (`data @> filter`). */
  readonly filter?: Record<string, unknown> | undefined
}

export const listInstances = async (
  sql: SqlQueryable,
  schema: string,
  db: string,
  classId: string,
  opts: InstancePageOptions,
): Promise<Page<InstanceView>> => {
  const filter =
    opts.filter !== undefined && Object.keys(opts.filter).length > 0 ? opts.filter : null
  return page(
    sql,
    `SELECT ${INST_COLS} FROM ${liveInstances(schema)}
     WHERE i.db = $1 AND i.class_id = $2 AND ($3::jsonb IS NULL OR i.data @> $3::jsonb)
       AND ($4::text IS NULL OR i.id > $4::text)
     ORDER BY i.id LIMIT $5`,
    [db, classId, filter === null ? null : JSON.stringify(filter)],
    opts,
    instanceView,
    (v) => v.id,
  )
}

export const getInstance = async (
  sql: SqlQueryable,
  schema: string,
  db: string,
  classId: string,
  instanceId: string,
): Promise<InstanceView | null> => {
  const rows = await sql.query(
    `SELECT ${INST_COLS} FROM ${liveInstances(schema)}
     WHERE i.db = $1 AND i.class_id = $2 AND i.id = $3`,
    [db, classId, instanceId],
  )
  return rows[0] === undefined ? null : instanceView(rows[0])
}

const INTEGER = /^-?(0|[1-9]\d*)$/
const NUMBER = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/

/** A query-string value as the property's type, or a problem. */
const filterValue = (def: PropertyDef, raw: string): { value: unknown } | { problem: string } => {
  let value: unknown = raw
  switch (def.type) {
    case 'integer':
      if (!INTEGER.test(raw)) return { problem: `must be an integer (got ${describe(raw)})` }
      value = Number(raw)
      break
    case 'number':
      if (!NUMBER.test(raw)) return { problem: `must be a number (got ${describe(raw)})` }
      value = Number(raw)
      break
    case 'boolean':
      if (raw !== 'true' && raw !== 'false') {
        return { problem: `must be true or false (got ${describe(raw)})` }
      }
      value = raw === 'true'
      break
    default:
      break
  }
  const problem = typeProblem(def, value)
  return problem === null ? { value } : { problem }
}

/**
 * Turns `?<property>=<value>` query parameters into a typed filter for `listInstances`, per the
 * class's property types. Unknown properties and values that do not fit are problems
 * (pointer `#/query/<name>`).
 */
export const parseInstanceFilter = (
  cls: ClassView,
  query: Readonly<Record<string, string>>,
): Parsed<Record<string, unknown>> => {
  const problems: FieldProblem[] = []
  const filter: Record<string, unknown> = {}
  const keys = Object.keys(query)
  if (keys.length > MAX_FILTERS) {
    return {
      ok: false,
      problems: [
        { pointer: '#/query', message: `at most ${MAX_FILTERS} filters (got ${keys.length})` },
      ],
    }
  }
  const props = new Map(
    cls.properties.filter((p) => isPropertyType(p.type)).map((p) => [p.name, p] as const),
  )
  for (const key of keys) {
    const pointer = `#/query/${key.replace(/~/g, '~0').replace(/\//g, '~1')}`
    const def = isPropertyName(key) ? props.get(key) : undefined
    if (def === undefined) {
      const shown = key.length > 64 ? `${key.slice(0, 64)}…` : key
      problems.push({
        pointer,
        message: `"${shown}" is not a property of class "${cls.id}" (filter by ${props.size === 0 ? 'nothing: it has no properties' : [...props.keys()].join(', ')}, or use limit and after)`,
      })
      continue
    }
    const raw = query[key] ?? ''
    const got = filterValue(def, raw)
    if ('problem' in got) problems.push({ pointer, message: `${key} ${got.problem}` })
    else filter[key] = got.value
  }
  return problems.length > 0 ? { ok: false, problems } : { ok: true, value: filter }
}
