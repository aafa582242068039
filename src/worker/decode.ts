import { validateEnvelope } from '../core/envelope.ts'
import type { StoredEnvelope } from '../core/envelope.ts'

/**
 * What a consumer accepts from Kafka: exactly a stored EventEnvelope as JSON (DESIGN.md section 2).
 * Anything else — not JSON, a legacy wrapper (`{message_type, payload}`, an `s3_reference`
 * indirection), an invalid envelope, one without its sequence number — is dead-lettered with the
 * reason returned here.
 */
export type Decoded =
  | { readonly ok: true; readonly envelope: StoredEnvelope }
  | { readonly ok: false; readonly reason: string }

const decoder = new TextDecoder('utf-8', { fatal: true })

export const decodeEnvelope = (value: Uint8Array): Decoded => {
  let text: string
  try {
    text = decoder.decode(value)
  } catch {
    return { ok: false, reason: 'value is not UTF-8 text' }
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch (error) {
    return { ok: false, reason: `value is not JSON: ${(error as Error).message}` }
  }
  if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) {
    const obj = parsed as Record<string, unknown>
    if ('message_type' in obj && 'payload' in obj) {
      return {
        ok: false,
        reason: 'legacy wrapper {message_type, payload}: only EventEnvelope JSON is accepted',
      }
    }
    if ('s3_reference' in obj) {
      return {
        ok: false,
        reason: 'legacy s3_reference indirection: only EventEnvelope JSON is accepted',
      }
    }
  }
  const v = validateEnvelope(parsed)
  if (!v.ok) return { ok: false, reason: `not a valid EventEnvelope: ${v.errors.join('; ')}` }
  if (v.envelope.sequence_number === null) {
    return {
      ok: false,
      reason: 'envelope has no sequence_number: it was not read from the event store',
    }
  }
  return { ok: true, envelope: v.envelope as StoredEnvelope }
}
