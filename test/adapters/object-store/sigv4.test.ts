import assert from 'node:assert/strict'
import { test } from 'node:test'
import {
  canonicalQuery,
  createSigner,
  EMPTY_PAYLOAD_HASH,
  uriEncode,
} from '../../../src/adapters/object-store/s3/sigv4.ts'

// The "GET Object" example of the AWS Signature Version 4 documentation for S3.
test('SigV4 reproduces the documented S3 GET Object signature', () => {
  const signer = createSigner({
    accessKeyId: 'AKIAIOSFODNN7EXAMPLE',
    secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
  })
  const headers = signer.sign({
    method: 'GET',
    path: '/test.txt',
    query: [],
    headers: { host: 'examplebucket.s3.amazonaws.com', range: 'bytes=0-9' },
    payloadHash: EMPTY_PAYLOAD_HASH,
    region: 'us-east-1',
    now: new Date('2013-05-24T00:00:00Z'),
  })
  assert.equal(
    headers.authorization,
    'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, ' +
      'SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, ' +
      'Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41',
  )
})

test('URI encoding keeps unreserved characters and encodes the rest, query sorted', () => {
  assert.equal(uriEncode("a b+c/d~e_f.g-h!'()*", true), 'a%20b%2Bc/d~e_f.g-h%21%27%28%29%2A')
  assert.equal(uriEncode('a/b', false), 'a%2Fb')
  assert.equal(
    canonicalQuery([
      ['prefix', 'x/y'],
      ['list-type', '2'],
    ]),
    'list-type=2&prefix=x%2Fy',
  )
})
