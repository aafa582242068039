import type { TSchema } from 'typebox'
import { Compile } from 'typebox/compile'
import type { Validator } from 'typebox/compile'

/**
 * Validation of input against a JSON Schema (TypeBox), reported as problems a client can act on:
 * a JSON pointer to each wrong value and what was expected there. Every property and every array
 * item is checked (a validator's own error list stops at the first bad item), alternatives are
 * reported once ("a string or null"), a missing property points at itself, and a schema's
 * `description` is the expected value's name.
 */

/** A problem in input: a JSON pointer into it and a message. */
export type FieldProblem = { readonly pointer: string; readonly message: string }

type Schema = {
  readonly type?: string | readonly string[]
  readonly properties?: Readonly<Record<string, Schema>>
  readonly patternProperties?: Readonly<Record<string, Schema>>
  readonly additionalProperties?: boolean | Schema
  readonly required?: readonly string[]
  readonly items?: Schema
  readonly anyOf?: readonly Schema[]
  readonly const?: unknown
  readonly enum?: readonly unknown[]
  readonly pattern?: string
  readonly minLength?: number
  readonly maxLength?: number
  readonly minimum?: number
  readonly maximum?: number
  readonly minItems?: number
  readonly maxItems?: number
  readonly minProperties?: number
  readonly maxProperties?: number
  readonly format?: string
  readonly description?: string
  readonly not?: Schema
  readonly then?: Schema
  readonly else?: Schema
}

const MAX_PROBLEMS = 100
const validators = new WeakMap<object, Validator>()

const validator = (schema: Schema): Validator => {
  let v = validators.get(schema)
  if (v === undefined) {
    v = Compile(schema as TSchema)
    validators.set(schema, v)
  }
  return v
}

/** Whether `value` fits `schema` (compiled once per schema object). */
export const fits = (schema: TSchema, value: unknown): boolean => validator(schema).Check(value)

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v)

/** RFC 6901: one reference token. */
export const pointerToken = (key: string | number): string =>
  String(key).replace(/~/g, '~0').replace(/\//g, '~1')

const at = (base: string, key: string | number): string => `${base}/${pointerToken(key)}`

/** A short description of a value, for messages. */
export const described = (v: unknown): string => {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'an array'
  if (typeof v === 'string')
    return v.length > 40 ? `a string of ${v.length} characters` : JSON.stringify(v)
  if (typeof v === 'object') return 'an object'
  return typeof v === 'number' || typeof v === 'boolean' ? `${typeof v} ${v}` : typeof v
}

const types = (s: Schema): readonly string[] =>
  s.type === undefined ? [] : typeof s.type === 'string' ? [s.type] : s.type

/** What a schema expects, in words. */
export const expected = (s: Schema): string => {
  if (s.description !== undefined) return s.description
  if ('const' in s) return JSON.stringify(s.const)
  if (s.enum !== undefined) return `one of ${s.enum.map((v) => JSON.stringify(v)).join(', ')}`
  if (s.anyOf !== undefined) {
    if (s.anyOf.every((m) => 'const' in m))
      return `one of ${s.anyOf.map((m) => JSON.stringify(m.const)).join(', ')}`
    return s.anyOf.map(expected).join(' or ')
  }
  const t = types(s)
  if (t.includes('string')) {
    const bounds = [
      s.minLength !== undefined && s.minLength > 0 ? `at least ${s.minLength}` : null,
      s.maxLength !== undefined ? `at most ${s.maxLength}` : null,
    ].filter((x) => x !== null)
    const fmt = s.format !== undefined ? ` (${s.format})` : ''
    const pat = s.pattern !== undefined ? ` matching ${s.pattern}` : ''
    return `a string${fmt}${pat}${bounds.length > 0 ? ` of ${bounds.join(' and ')} characters` : ''}`
  }
  if (t.includes('integer') || t.includes('number')) {
    const what = t.includes('integer') ? 'an integer' : 'a number'
    if (s.minimum !== undefined && s.maximum !== undefined)
      return `${what} from ${s.minimum} to ${s.maximum}`
    if (s.minimum !== undefined) return `${what} ≥ ${s.minimum}`
    if (s.maximum !== undefined) return `${what} ≤ ${s.maximum}`
    return what
  }
  if (t.includes('boolean')) return 'a boolean'
  if (t.includes('null')) return 'null'
  if (t.includes('array')) return 'an array'
  if (t.includes('object')) return 'an object'
  return 'a value that fits the schema'
}

/** The message for a value that does not fit a leaf schema. */
const mismatch = (s: Schema, value: unknown): string => {
  const t = types(s)
  if (typeof value === 'string' && t.includes('string') && s.description === undefined) {
    if (s.maxLength !== undefined && value.length > s.maxLength)
      return `must be at most ${s.maxLength} characters (got ${value.length})`
    if (s.minLength !== undefined && value.length < s.minLength)
      return `must be at least ${s.minLength} characters (got ${value.length})`
  }
  return `expected ${expected(s)} (got ${described(value)})`
}

const collect = (s: Schema, value: unknown, pointer: string, out: FieldProblem[]): void => {
  if (out.length >= MAX_PROBLEMS || validator(s).Check(value)) return
  const before = out.length
  const t = types(s)
  if (t.includes('object') && isRecord(value)) {
    const props = s.properties ?? {}
    for (const name of s.required ?? []) {
      if (!Object.hasOwn(value, name))
        out.push({ pointer: at(pointer, name), message: 'is required' })
    }
    const keys = Object.keys(value)
    if (s.maxProperties !== undefined && keys.length > s.maxProperties) {
      out.push({ pointer, message: `at most ${s.maxProperties} properties (got ${keys.length})` })
    } else if (s.minProperties !== undefined && keys.length < s.minProperties) {
      out.push({
        pointer,
        message:
          s.description !== undefined
            ? `expected ${s.description}`
            : `at least ${s.minProperties} ${s.minProperties === 1 ? 'property' : 'properties'}`,
      })
    }
    const patterns = Object.entries(s.patternProperties ?? {}).map(
      ([p, schema]) => [new RegExp(p, 'u'), schema] as const,
    )
    const allowed = Object.keys(props)
    for (const key of keys) {
      const own = props[key]
      if (own !== undefined) {
        collect(own, value[key], at(pointer, key), out)
        continue
      }
      const matched = patterns.find(([re]) => re.test(key))
      if (matched !== undefined) {
        collect(matched[1], value[key], at(pointer, key), out)
      } else if (s.additionalProperties === false) {
        const shown = key.length > 64 ? `${key.slice(0, 64)}…` : key
        out.push({
          pointer: at(pointer, key),
          message:
            allowed.length > 0
              ? `unknown field "${shown}" (allowed: ${allowed.join(', ')})`
              : `"${shown}" is not allowed here`,
        })
      } else if (typeof s.additionalProperties === 'object') {
        collect(s.additionalProperties, value[key], at(pointer, key), out)
      }
    }
  } else if (t.includes('array') && Array.isArray(value)) {
    const items = value as readonly unknown[]
    if (s.maxItems !== undefined && items.length > s.maxItems) {
      out.push({ pointer, message: `at most ${s.maxItems} items (got ${items.length})` })
      return
    }
    if (s.minItems !== undefined && items.length < s.minItems) {
      out.push({ pointer, message: `at least ${s.minItems} items (got ${items.length})` })
    }
    if (s.items !== undefined)
      items.forEach((item, i) => collect(s.items as Schema, item, at(pointer, i), out))
  }
  if (out.length > before) return
  if (s.not !== undefined && Object.keys(s.not).length === 0) {
    out.push({ pointer, message: 'is not allowed here' })
    return
  }
  // A leaf, or what only the whole object shows (if/then/else, not, …): the validator's own
  // errors, one per place.
  if (t.length > 0 && !t.some((x) => matchesType(x, value))) {
    out.push({ pointer, message: mismatch(s, value) })
    return
  }
  if (s.anyOf !== undefined || 'const' in s || s.enum !== undefined || t.length === 0) {
    const errors = [...validator(s).Errors(value)]
    const own = errors.filter((e) => e.instancePath === '' && e.keyword !== 'required')
    const deeper = errors.filter((e) => e.instancePath !== '' || e.keyword === 'required')
    if (own.length > 0 && deeper.length === 0) {
      out.push({ pointer, message: mismatch(s, value) })
      return
    }
  }
  const errors = [...validator(s).Errors(value)]
  const conditional = errors.find((e) => e.keyword === 'if' && e.instancePath === '')
  if (conditional !== undefined && errors.every((e) => e === conditional)) {
    // `if` reports only that its branch failed: the branch says what is wrong.
    const failing = (conditional.params as { failingKeyword?: string }).failingKeyword
    const branch = failing === 'then' ? s.then : failing === 'else' ? s.else : undefined
    if (branch !== undefined) collect(branch, value, pointer, out)
    if (out.length > before) return
  }
  const seen = new Set<string>()
  for (const e of errors) {
    if (e.keyword === 'if') continue
    const missing =
      e.keyword === 'required' ? (e.params as { requiredProperties?: string[] }) : null
    const where =
      missing?.requiredProperties?.[0] !== undefined
        ? `${pointer}${e.instancePath}/${pointerToken(missing.requiredProperties[0])}`
        : `${pointer}${e.instancePath}`
    if (seen.has(where)) continue
    seen.add(where)
    const message =
      missing !== null
        ? 'is required'
        : e.keyword === 'boolean' || e.keyword === 'not'
          ? 'is not allowed here'
          : where === pointer
            ? mismatch(s, value)
            : e.message
    out.push({ pointer: where, message })
    if (out.length >= MAX_PROBLEMS) return
  }
  if (out.length === before) out.push({ pointer, message: mismatch(s, value) })
}

const matchesType = (type: string, v: unknown): boolean => {
  switch (type) {
    case 'object':
      return isRecord(v)
    case 'array':
      return Array.isArray(v)
    case 'string':
      return typeof v === 'string'
    case 'integer':
      return typeof v === 'number' && Number.isInteger(v)
    case 'number':
      return typeof v === 'number'
    case 'boolean':
      return typeof v === 'boolean'
    case 'null':
      return v === null
    default:
      return true
  }
}

/** The problems of `value` against `schema` (empty when it fits), pointers prefixed by `base`. */
export const problemsOf = (schema: TSchema, value: unknown, base = ''): FieldProblem[] => {
  const out: FieldProblem[] = []
  collect(schema, value, base, out)
  return out.slice(0, MAX_PROBLEMS)
}
