import assert from 'node:assert/strict'
import net from 'node:net'
import { after, before, describe, test } from 'node:test'
import { serveHttp } from '../../src/cli/serve.ts'
import type { Served } from '../../src/cli/serve.ts'
import { silentLogger } from '../../src/core/ports/logger.ts'
import type { HttpApp } from '../../src/http/app.ts'

/** Sends raw bytes on a new connection; what came back before the server closed it. */
const raw = (url: string, bytes: Buffer): Promise<{ text: string; reset: boolean }> =>
  new Promise((resolve) => {
    const { hostname, port } = new URL(url)
    const socket = net.connect(Number(port), hostname)
    const chunks: Buffer[] = []
    let reset = false
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('error', () => {
      reset = true
    })
    socket.on('close', () => resolve({ text: Buffer.concat(chunks).toString('latin1'), reset }))
    socket.write(bytes)
    // A client still sending its body when the server refuses the request.
    socket.write(Buffer.alloc(512 * 1024, 0x78), () => socket.end())
  })

describe('serveHttp: what node cannot parse as HTTP/1.1', () => {
  let served: Served
  const app: HttpApp = {
    maxBodyBytes: 1024 * 1024,
    handle: async () => ({ status: 200, headers: { 'content-type': 'text/plain' }, body: 'ok' }),
  }
  before(async () => {
    served = await serveHttp(app, '127.0.0.1', 0, silentLogger)
  })
  after(async () => served.close())

  test('a control character in a header: a 400 problem+json, the connection closed without a reset', async () => {
    const head = Buffer.from(
      'POST /api/v1/databases HTTP/1.1\r\nHost: x\r\nIf-Match: "1\x01"\r\n' +
        'Content-Type: application/json\r\nContent-Length: 524288\r\n\r\n',
      'latin1',
    )
    const got = await raw(served.url, head)
    assert.equal(got.reset, false, 'the client reads the answer, not a reset')
    assert.match(got.text, /^HTTP\/1\.1 400 Bad Request\r\n/)
    assert.match(got.text, /content-type: application\/problem\+json/)
    assert.match(got.text, /connection: close/)
    const body = JSON.parse(got.text.slice(got.text.indexOf('\r\n\r\n') + 4)) as { code: string }
    assert.equal(body.code, 'malformed_request')
    // The server goes on serving.
    const ok = await fetch(`${served.url}/healthz`)
    assert.equal(await ok.text(), 'ok')
  })

  test('headers too large: 431', async () => {
    const head = Buffer.from(
      `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`,
      'latin1',
    )
    const got = await raw(served.url, head)
    assert.match(got.text, /^HTTP\/1\.1 431 /)
    assert.match(got.text, /"code":"http_431"/)
  })
})
