import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import fc from 'fast-check'
import { openApiOf } from '../../src/http/contract.ts'
import { OMS_OPERATIONS } from '../../src/http/oms-contract.ts'
import { OPERATOR_OPERATIONS } from '../../src/http/operator-contract.ts'
import { openEmbedded } from '../support/embedded.ts'
import type { Embedded } from '../support/embedded.ts'
import { inProcessClient } from '../support/oms-client.ts'

type Schema = Record<string, unknown>
const doc = openApiOf([...OMS_OPERATIONS, ...OPERATOR_OPERATIONS], {
  title: 'cairn OMS',
  authenticated: true,
}) as unknown as {
  paths: Record<string, Record<string, { parameters?: Schema[]; requestBody?: Schema }>>
  components: { schemas: Record<string, Schema> }
}

const resolve = (s: Schema): Schema => {
  const ref = s['$ref']
  return typeof ref === 'string'
    ? (doc.components.schemas[ref.split('/').at(-1) as string] as Schema)
    : s
}

/** Values that fit the schema — mostly; the caller mixes them with values that do not. */
const fromSchema = (raw: Schema, depth = 0): fc.Arbitrary<unknown> => {
  const s = resolve(raw)
  if ('const' in s) return fc.constant(s['const'])
  if (Array.isArray(s['enum'])) return fc.constantFrom(...(s['enum'] as unknown[]))
  const type = Array.isArray(s['type']) ? (s['type'] as string[])[0] : s['type']
  switch (type) {
    case 'string':
      return typeof s['pattern'] === 'string'
        ? fc.stringMatching(new RegExp(s['pattern']))
        : fc.string({ maxLength: 40 })
    case 'integer':
      return fc.integer({ min: -5, max: 1_000 })
    case 'number':
      return fc.double({ noNaN: true, noDefaultInfinity: true })
    case 'boolean':
      return fc.boolean()
    case 'array':
      return depth > 3
        ? fc.constant([])
        : fc.array(fromSchema((s['items'] as Schema | undefined) ?? {}, depth + 1), {
            maxLength: 4,
          })
    case 'object': {
      const props = (s['properties'] as Record<string, Schema> | undefined) ?? {}
      if (Object.keys(props).length === 0 || depth > 3) {
        return fc.dictionary(fc.string({ maxLength: 12 }), fc.jsonValue({ maxDepth: 2 }), {
          maxKeys: 5,
        })
      }
      const required = (s['required'] as string[] | undefined) ?? []
      const shape: Record<string, fc.Arbitrary<unknown>> = {}
      for (const [k, v] of Object.entries(props)) shape[k] = fromSchema(v, depth + 1)
      return fc.record(shape, { requiredKeys: required.filter((k) => k in shape) })
    }
    default:
      return fc.jsonValue({ maxDepth: 3 })
  }
}

const weird = fc.oneof(
  fc.string({ maxLength: 30 }),
  fc.string({ unit: 'grapheme', maxLength: 10 }),
  fc.constantFrom('..', '%2F', 'a:b', '%00', ' ', 'x'.repeat(300), '%E0%A4%A', '\u0000'),
)

const operations = Object.entries(doc.paths).flatMap(([path, methods]) =>
  Object.entries(methods).map(([method, op]) => ({ path, method: method.toUpperCase(), op })),
)

describe('fuzzing every endpoint from its OpenAPI schema', () => {
  let cairn: Embedded
  before(async () => {
    cairn = await openEmbedded()
  })
  after(async () => {
    await cairn.destroy()
  })

  for (const { path, method, op } of operations) {
    test(`${method} ${path}: no 5xx, no crash, problem+json on errors, for any input`, async () => {
      const c = inProcessClient(cairn.runtime.app)
      const params = (op.parameters ?? []).map(resolve)
      const pathParams = params.filter((p) => p['in'] === 'path')
      const pathArb = fc.record(
        Object.fromEntries(
          pathParams.map((p) => [
            p['name'] as string,
            fc.oneof(fromSchema(p['schema'] as Schema), weird).map((v) => String(v)),
          ]),
        ),
      )
      const queryArb = fc.dictionary(
        fc.constantFrom(
          'expected_seq',
          'limit',
          'after',
          'from_seq',
          'name',
          'price',
          'handler',
          'seconds',
          'x',
        ),
        fc.oneof(fc.nat().map(String), weird),
        { maxKeys: 3 },
      )
      const headerArb = fc.record(
        {
          'if-match': fc.oneof(
            fc.nat().map((n) => `"${n}"`),
            weird,
          ),
          'idempotency-key': fc.oneof(fc.uuid(), weird),
          'content-type': fc.constantFrom(
            'application/json',
            'text/plain',
            'application/merge-patch+json',
            '',
          ),
          traceparent: weird,
        },
        { requiredKeys: [] },
      )
      const bodySchema = (
        op.requestBody?.['content'] as Record<string, { schema: Schema }> | undefined
      )?.['application/json']?.schema
      const bodyArb = fc.oneof(
        ...(bodySchema === undefined ? [] : [fromSchema(bodySchema).map((v) => JSON.stringify(v))]),
        fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v)),
        fc.string({ maxLength: 50 }),
        fc.constant('{"a":'),
        fc.constant(''),
      )
      await fc.assert(
        fc.asyncProperty(
          pathArb,
          queryArb,
          headerArb,
          bodyArb,
          async (pp, query, headers, body) => {
            let url = path
            for (const [k, v] of Object.entries(pp))
              url = url.replace(`{${k}}`, encodeURIComponent(v))
            const qs = new URLSearchParams(query).toString()
            const clean: Record<string, string> = {}
            for (const [k, v] of Object.entries(headers)) {
              if (v !== '' && /^[\t\x20-\x7e]*$/.test(v)) clean[k] = v
            }
            const r = await c.request(method, qs === '' ? url : `${url}?${qs}`, {
              ...(method === 'GET' ? {} : { raw: body }),
              headers: clean,
            })
            assert.ok(
              r.status < 500,
              `${method} ${url}?${qs} ${JSON.stringify(clean)} ${body} → ${r.status} ${r.text}`,
            )
            if (r.status >= 400) {
              assert.match(r.headers['content-type'] ?? '', /application\/problem\+json/)
              assert.equal(r.json.status, r.status)
              assert.equal(typeof r.json.code, 'string')
            }
          },
        ),
        { numRuns: 150, seed: 20261127 },
      )
    })
  }
})
