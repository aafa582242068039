import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
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

/**
 * Schemathesis against an embedded cairn's /openapi.json: every check, every phase (coverage,
 * fuzzing, stateful), a fixed seed. The document must tell the truth about every answer the OMS
 * gives, with bearer tokens configured and without.
 */
const fuzz = async (tokens: boolean): Promise<void> => {
  const dir = await mkdtemp(path.join(tmpdir(), 'cairn-schemathesis-'))
  const cairn = await startCairn(
    ['start'],
    { CAIRN_DATA_DIR: dir, ...(tokens ? { OMS_API_TOKENS: TOKEN } : {}) },
    120_000,
  )
  try {
    const args = [SCRIPT, cairn.url, '--max-examples', '25', '--workers', '2', '--seed', '7']
    if (tokens) args.push('-H', `Authorization: Bearer ${TOKEN}`)
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
    assert.equal(result.code, 0, result.out.slice(-20_000))
    assert.match(result.out, /✅ Coverage/)
    assert.match(result.out, /✅ Fuzzing/)
    assert.match(result.out, /✅ Stateful/)
    assert.match(result.out, /Tested: 19/, 'every operation of the document was tested')
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
  () => fuzz(false),
)

test('Schemathesis, every check and phase, with bearer tokens', { timeout: 900_000 }, () =>
  fuzz(true),
)
