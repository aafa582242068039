import assert from 'node:assert/strict'
import { execFile, spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { startCairn } from '../support/cairn-process.ts'
import { childEnv } from '../support/child.ts'

const run = promisify(execFile)
const SCRIPT = fileURLToPath(new URL('../../scripts/schemathesis.sh', import.meta.url))
const TOKEN = 'schemathesis-token-0123456789'
const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const NODE = path.join(ROOT, 'node_modules', '.bin', 'node')
const LEDGER = path.join(ROOT, 'examples', 'ledger', 'main.ts')

/**
 * Schemathesis at `url` with a fixed seed: exit 0, every phase passed, `operations` tested. On a
 * failure the message ends with the server's own last lines (`serverOutput`).
 */
const schemathesis = async (
  url: string,
  operations: number,
  serverOutput: () => string,
  token?: string,
): Promise<void> => {
  const args = [SCRIPT, url, '--max-examples', '25', '--workers', '2', '--seed', '7']
  if (token !== undefined) args.push('-H', `Authorization: Bearer ${token}`)
  const result = await run('bash', args, {
    env: childEnv({}),
    timeout: 600_000,
    maxBuffer: 64 * 1024 * 1024,
  }).then(
    (r) => ({ code: 0, out: r.stdout + r.stderr }),
    (e: { code?: number; stdout?: string; stderr?: string }) => ({
      code: e.code ?? -1,
      out: `${e.stdout ?? ''}${e.stderr ?? ''}`,
    }),
  )
  const server = () =>
    `${result.out.slice(-20_000)}\n--- the server's last output ---\n${serverOutput().slice(-8_000)}`
  assert.equal(result.code, 0, server())
  assert.match(result.out, /✅ Coverage/, server())
  assert.match(result.out, /✅ Fuzzing/, server())
  assert.match(result.out, /✅ Stateful/, server())
  assert.match(result.out, new RegExp(`Tested: ${operations}\\b`), 'every operation was tested')
}

/**
 * Schemathesis against an embedded cairn's /openapi.json: every check, every phase (coverage,
 * fuzzing, stateful), a fixed seed. The document must tell the truth about every answer the OMS
 * gives, with bearer tokens configured and without.
 */
const fuzzOms = async (tokens: boolean): Promise<void> => {
  const dir = await mkdtemp(path.join(tmpdir(), 'cairn-schemathesis-'))
  const cairn = await startCairn(
    ['start'],
    { CAIRN_DATA_DIR: dir, ...(tokens ? { OMS_API_TOKENS: TOKEN } : {}) },
    120_000,
  )
  try {
    // The OMS's 19 operations and the operator's 7, but the stream (see schemathesis.toml).
    await schemathesis(cairn.url, 25, () => cairn.output(), tokens ? TOKEN : undefined)
  } finally {
    await cairn.stop('SIGTERM')
    await rm(dir, { recursive: true, force: true })
  }
}

test(
  'Schemathesis, every check and phase, without tokens: the OpenAPI document is the truth',
  {
    timeout: 900_000,
  },
  () => fuzzOms(false),
)

test('Schemathesis, every check and phase, with bearer tokens', { timeout: 900_000 }, () =>
  fuzzOms(true),
)

test(
  'Schemathesis against a declared domain: the routes generated for the ledger example',
  {
    timeout: 900_000,
  },
  async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'cairn-schemathesis-ledger-'))
    const child = spawn(NODE, ['--conditions=cairn-source', LEDGER], {
      cwd: ROOT,
      env: childEnv({ CAIRN_DATA_DIR: dir, PORT: '0', LOG_FORMAT: 'json' }),
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (out += d.toString()))
    try {
      const deadline = Date.now() + 120_000
      let url: string | undefined
      while (url === undefined) {
        assert.ok(
          Date.now() < deadline && child.exitCode === null,
          `the ledger did not start: ${out}`,
        )
        url = /"http":"(http:\/\/[^"]+)","msg":"ledger is running"/.exec(out)?.[1]
        await new Promise((r) => setTimeout(r, 50))
      }
      await schemathesis(url, 7, () => out)
      assert.doesNotMatch(out, /"level":50/, 'no request failed unexpectedly')
    } finally {
      child.kill('SIGTERM')
      await new Promise((r) => child.once('exit', r))
      await rm(dir, { recursive: true, force: true })
    }
  },
)
