import Type from 'typebox'
import type { Static, TSchema } from 'typebox'
import {
  CLASS_ID,
  DATABASE_NAME,
  INSTANCE_ID,
  LIMITS,
  PROPERTY_NAME,
  PROPERTY_TYPES,
} from './model.ts'

/**
 * The reference domain's requests as JSON Schemas (TypeBox): the one description of what a client
 * may send. The OMS validates with them (http/oms-contract.ts), the OpenAPI document and the typed
 * client are built from them, and the parsers (commands.ts) check stored commands with them. What
 * JSON Schema cannot say (a property name given twice, how deep or large instance data is) the
 * parsers add, and the document says in words.
 */

const pattern = (re: RegExp): string => re.source

export const DatabaseName = Type.String({
  pattern: pattern(DATABASE_NAME),
  description: '1–63 characters: a lowercase letter, then lowercase letters, digits, "_" or "-"',
})
export const ClassId = Type.String({
  pattern: pattern(CLASS_ID),
  description: '1–128 characters: a letter, then letters, digits or "_"',
})
export const InstanceId = Type.String({
  pattern: pattern(INSTANCE_ID),
  description: '1–128 characters: a letter or digit, then letters, digits, "_", "." or "-"',
})

const Text = (max: number) => Type.String({ maxLength: max })
const NullableText = (max: number) => Type.Union([Text(max), Type.Null()])

/**
 * One property of a class. `target_class` is required on a `reference` and refused on any other
 * type; the names of a class's properties are unique.
 */
export const PropertyDefinition = Type.Object(
  {
    name: Type.String({
      pattern: pattern(PROPERTY_NAME),
      not: Type.Literal('__proto__'),
      description: '1–128 characters: a letter or "_", then letters, digits or "_"; not __proto__',
    }),
    type: Type.Enum(PROPERTY_TYPES),
    required: Type.Optional(Type.Boolean()),
    target_class: Type.Optional(ClassId),
    description: Type.Optional(Text(LIMITS.maxDescription)),
  },
  {
    additionalProperties: false,
    if: Type.Object({ type: Type.Literal('reference') }),
    then: Type.Object({ target_class: ClassId }),
    else: Type.Object({ target_class: Type.Optional(Type.Never()) }),
  },
)

const Properties = Type.Array(PropertyDefinition, {
  maxItems: LIMITS.maxProperties,
  description: 'property names are unique within a class',
})

/**
 * Instance data: a JSON object keyed by property names, at most `maxProperties` keys, at most
 * `maxDataBytes` bytes of JSON and `maxDataDepth` levels deep; a create holds no null.
 */
const dataOf = (values: TSchema, options: { minProperties?: number; description: string }) =>
  Type.Record(Type.String({ pattern: pattern(PROPERTY_NAME) }), values, {
    additionalProperties: false,
    maxProperties: LIMITS.maxProperties,
    ...options,
    description: `${options.description}; keys are property names of the class; at most ${LIMITS.maxDataBytes} bytes of JSON, ${LIMITS.maxDataDepth} levels deep`,
  })

const NotNull = Type.Union(
  [Type.String(), Type.Number(), Type.Boolean(), Type.Array(Type.Unknown()), Type.Object({})],
  { description: 'any JSON value but null (null removes a property, in an update)' },
)

export const CreateDatabaseBody = Type.Object(
  { name: DatabaseName, description: Type.Optional(NullableText(LIMITS.maxDescription)) },
  { additionalProperties: false },
)

export const CreateClassBody = Type.Object(
  {
    id: ClassId,
    label: Type.Optional(NullableText(LIMITS.maxLabel)),
    description: Type.Optional(NullableText(LIMITS.maxDescription)),
    properties: Type.Optional(Properties),
  },
  { additionalProperties: false },
)

export const UpdateClassBody = Type.Object(
  {
    label: Type.Optional(NullableText(LIMITS.maxLabel)),
    description: Type.Optional(NullableText(LIMITS.maxDescription)),
    properties: Type.Optional(Properties),
  },
  {
    additionalProperties: false,
    minProperties: 1,
    description: 'a partial update: at least one of label, description, properties',
  },
)

export const CreateInstanceBody = Type.Object(
  {
    id: Type.Optional(InstanceId),
    data: dataOf(NotNull, { description: 'the instance: no null values' }),
  },
  { additionalProperties: false },
)

export const UpdateInstanceBody = Type.Object(
  {
    data: dataOf(Type.Unknown(), {
      minProperties: 1,
      description: 'a JSON merge patch of the data: null removes a property',
    }),
  },
  { additionalProperties: false },
)

export type CreateDatabaseRequest = Static<typeof CreateDatabaseBody>
export type CreateClassRequest = Static<typeof CreateClassBody>
export type UpdateClassRequest = Static<typeof UpdateClassBody>
export type CreateInstanceRequest = Static<typeof CreateInstanceBody>
export type UpdateInstanceRequest = Static<typeof UpdateInstanceBody>
