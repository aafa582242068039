import { createHash, createHmac, createSecretKey } from 'node:crypto'
import type { KeyObject } from 'node:crypto'

/**
 * AWS Signature Version 4 for S3 requests, written out so the request path stays lean: the AWS
 * SDK spends several times the CPU of a plain signed request (DESIGN.md section 5).
 */
export type Credentials = {
  readonly accessKeyId: string
  readonly secretAccessKey: string
  readonly sessionToken?: string
}

export type SignInput = {
  readonly method: string
  /** Already URI-encoded path, e.g. `/bucket/a%20b`. */
  readonly path: string
  /** Decoded query parameters; encoded and sorted here. */
  readonly query: readonly (readonly [string, string])[]
  /** Lower-case header names; all are signed. `host` must be present. */
  readonly headers: Record<string, string>
  readonly payloadHash: string
  readonly region: string
  readonly now: Date
}

export const EMPTY_PAYLOAD_HASH = createHash('sha256').update('').digest('hex')

export const sha256Hex = (data: Uint8Array | string): string =>
  createHash('sha256').update(data).digest('hex')

/** RFC 3986 encoding as SigV4 wants it: unreserved characters stay, everything else is %XX. */
export const uriEncode = (value: string, keepSlash: boolean): string => {
  const encoded = encodeURIComponent(value).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  )
  return keepSlash ? encoded.replace(/%2F/g, '/') : encoded
}

export const canonicalQuery = (query: readonly (readonly [string, string])[]): string =>
  query
    .map(([k, v]) => [uriEncode(k, false), uriEncode(v, false)] as const)
    .sort(([a, av], [b, bv]) => (a < b ? -1 : a > b ? 1 : av < bv ? -1 : av > bv ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&')

const hmac = (key: Uint8Array | string, data: string): Buffer =>
  createHmac('sha256', key).update(data).digest()

export type Signer = {
  /** Returns the headers to add: `authorization`, `x-amz-date`, `x-amz-content-sha256`. */
  sign(input: SignInput): Record<string, string>
}

export const createSigner = (credentials: Credentials): Signer => {
  // The signing key depends only on the day and region: derive it once per day, and keep it as
  // a KeyObject so that each signature does not import the key again.
  let cachedKey: { scopeDate: string; region: string; key: KeyObject } | undefined

  const signingKey = (scopeDate: string, region: string): KeyObject => {
    if (cachedKey?.scopeDate === scopeDate && cachedKey.region === region) return cachedKey.key
    const kDate = hmac(`AWS4${credentials.secretAccessKey}`, scopeDate)
    const key = createSecretKey(hmac(hmac(hmac(kDate, region), 's3'), 'aws4_request'))
    cachedKey = { scopeDate, region, key }
    return key
  }

  return {
    sign(input) {
      const amzDate = input.now
        .toISOString()
        .replace(/[-:]/g, '')
        .replace(/\.\d{3}/, '')
      const scopeDate = amzDate.slice(0, 8)
      const headers: Record<string, string> = {
        ...input.headers,
        'x-amz-date': amzDate,
        'x-amz-content-sha256': input.payloadHash,
      }
      if (credentials.sessionToken !== undefined) {
        headers['x-amz-security-token'] = credentials.sessionToken
      }
      const names = Object.keys(headers).sort()
      const canonicalHeaders = names.map((n) => `${n}:${String(headers[n]).trim()}\n`).join('')
      const signedHeaders = names.join(';')
      const canonicalRequest = [
        input.method,
        input.path,
        canonicalQuery(input.query),
        canonicalHeaders,
        signedHeaders,
        input.payloadHash,
      ].join('\n')
      const scope = `${scopeDate}/${input.region}/s3/aws4_request`
      const stringToSign = `AWS4-HMAC-SHA256\n${amzDate}\n${scope}\n${sha256Hex(canonicalRequest)}`
      const signature = createHmac('sha256', signingKey(scopeDate, input.region))
        .update(stringToSign)
        .digest('hex')
      const out: Record<string, string> = {
        authorization: `AWS4-HMAC-SHA256 Credential=${credentials.accessKeyId}/${scope}, SignedHeaders=${signedHeaders}, Signature=${signature}`,
        'x-amz-date': amzDate,
        'x-amz-content-sha256': input.payloadHash,
      }
      if (credentials.sessionToken !== undefined) {
        out['x-amz-security-token'] = credentials.sessionToken
      }
      return out
    },
  }
}
