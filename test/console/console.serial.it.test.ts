import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'
import type { Page } from 'playwright-core'
import { openWriteSide } from '../../src/config/compose.ts'
import { loadConfig } from '../../src/config/env.ts'
import { silentLogger } from '../../src/core/ports/logger.ts'
import { startCairn } from '../support/cairn-process.ts'
import type { CairnProcess } from '../support/cairn-process.ts'
import { FAST_ENV } from '../support/embedded.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
// The docs' screenshots are taken again with CAIRN_CONSOLE_SHOTS=docs/console; a plain run keeps
// its own in a temporary folder, leaving the working tree as it was.
const SHOTS = path.resolve(
  ROOT,
  process.env['CAIRN_CONSOLE_SHOTS'] ?? path.join(tmpdir(), 'cairn-console-shots'),
)
const ADMIN = 'admin-token-0123456789abcdef'
const VIEWER = 'viewer-token-0123456789abcdef'
const HOSTILE = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'

/** Debian's chromium (scripts/browser.sh installs it when missing; test.sh passes its path). */
const chromiumPath = (): string =>
  process.env['CAIRN_CHROMIUM'] ??
  execFileSync('bash', [path.join(ROOT, 'scripts', 'browser.sh')], { encoding: 'utf8' }).trim()

type CommandAnswer = {
  readonly status: string
  readonly command_id: string
  readonly result: {
    readonly events: readonly {
      event_id: string
      aggregate_type: string
      aggregate_id: string
      sequence_number: number
    }[]
  }
}

/** A command through the API with the admin token, answered once it is done (Prefer: wait). */
const api = async (
  url: string,
  method: string,
  route: string,
  body?: unknown,
): Promise<{ status: number; json: CommandAnswer }> => {
  const res = await fetch(url + route, {
    method,
    headers: {
      authorization: `Bearer ${ADMIN}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      prefer: 'wait=20',
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  })
  return { status: res.status, json: (await res.json()) as CommandAnswer }
}

/** A note submitted with the admin token, answered 202 at once. */
const submit = (url: string, note: unknown): Promise<Response> =>
  fetch(`${url}/api/v1/databases/shop/classes/Note/instances`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: JSON.stringify(note),
  })

const login = async (page: Page, token: string): Promise<void> => {
  await page.locator('#login').waitFor({ state: 'visible' })
  await page.fill('#token', token)
  await page.click('#login button[type=submit]')
  await page.locator('#login').waitFor({ state: 'hidden' })
}

const shot = (page: Page, name: string) =>
  page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true, type: 'png' })

test(
  'the console in a real browser: each page, a command followed to completion, a parked event retried, scopes and escaping',
  { timeout: 180_000 },
  async () => {
    const executablePath = chromiumPath()
    const dataDir = await mkdtemp(path.join(tmpdir(), 'cairn-console-'))
    const env = {
      ...FAST_ENV,
      // startCairn reads the address from the log.
      LOG_LEVEL: 'info',
      CAIRN_DATA_DIR: dataDir,
      OMS_API_TOKENS: `admin=${ADMIN},viewer=${VIEWER}:read`,
    }
    let cairn: CairnProcess | undefined
    const browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] })
    try {
      // Some traffic: a database, a class and an instance whose data is hostile markup.
      cairn = await startCairn(['start'], env, 120_000)
      let r = await api(cairn.url, 'POST', '/api/v1/databases', { name: 'shop' })
      assert.equal(r.json.status, 'COMPLETED', JSON.stringify(r.json))
      r = await api(cairn.url, 'POST', '/api/v1/databases/shop/classes', {
        id: 'Note',
        properties: [{ name: 'text', type: 'string' }],
      })
      assert.equal(r.json.status, 'COMPLETED', JSON.stringify(r.json))
      r = await api(cairn.url, 'POST', '/api/v1/databases/shop/classes/Note/instances', {
        id: 'n1',
        data: { text: HOSTILE },
      })
      assert.equal(r.json.status, 'COMPLETED', JSON.stringify(r.json))
      const noteCommand = r.json.command_id
      const noteEvent = r.json.result.events[0]
      assert.ok(noteEvent !== undefined)
      await cairn.stop('SIGTERM')
      cairn = undefined

      // The projection's record of the instance's event, dead-lettered as a failing projection
      // leaves it (PGlite has one process: done while cairn is stopped). Retried, it applies again.
      {
        const config = loadConfig({ ...env, CAIRN_MODE: 'embedded' })
        const schema = config.sequencing.schema
        await using ws = await openWriteSide(config, silentLogger, { probe: false })
        const failed = await ws.sql.query(
          `UPDATE ${schema}.processed_events SET status = 'failed', owner = NULL,
                  last_error = $2, result = NULL
            WHERE handler = 'projection_worker' AND event_id = $1 RETURNING event_id`,
          [noteEvent.event_id, `read model refused: ${HOSTILE}`],
        )
        assert.equal(failed.length, 1)
        await ws.sql.query(
          `UPDATE ${schema}.aggregate_versions SET last_sequence = $3
            WHERE handler = 'projection_worker' AND aggregate_type = $1 AND aggregate_id = $2`,
          [noteEvent.aggregate_type, noteEvent.aggregate_id, noteEvent.sequence_number - 1],
        )
      }
      cairn = await startCairn(['start'], env, 120_000)
      const url = cairn.url

      const page = await browser.newPage({ viewport: { width: 1200, height: 800 } })
      const errors: string[] = []
      page.on('pageerror', (e) => errors.push(String(e)))
      page.on('console', (m) => {
        if (m.type() === 'error' && !/status of 40[134]/.test(m.text())) errors.push(m.text())
      })

      // Pipeline overview, live, with a read-only token (asked for at the first 401).
      await page.goto(`${url}/console`)
      await login(page, VIEWER)
      await page.locator('#live.on').waitFor()
      await page.locator('#handlers').getByText('projection_worker').waitFor()
      // Some throughput for the chart, and a few samples of it.
      for (let i = 0; i < 30; i++) {
        const res = await submit(url, { id: `load-${i}`, data: { text: `note ${i}` } })
        assert.equal(res.status, 202)
        if (i % 10 === 9) await new Promise((resolve) => setTimeout(resolve, 1_500))
      }
      await page.locator('.legend', { hasText: / (?:[6-9]|\d\d) samples/ }).waitFor()
      await shot(page, 'overview')

      // Parked: the failed record with its reason, shown as text; a read-only token cannot retry.
      await page.click('nav a[data-page=parked]')
      const row = page.locator('tr', { hasText: noteEvent.event_id })
      await row.waitFor()
      await row.getByText('read model refused: <script>').waitFor()
      await shot(page, 'parked')
      await row.locator('button[data-action=retry]').click()
      await page.locator('#notice.error').getByText('403 forbidden').waitFor()
      assert.match(await page.locator('#notice').innerText(), /lacks the scope operate/)

      // With the admin token the retry goes through; the projection applies the event again.
      await page.click('#who button')
      await login(page, ADMIN)
      await page.click('nav a[data-page=parked]')
      await page
        .locator('tr', { hasText: noteEvent.event_id })
        .locator('button[data-action=retry]')
        .click()
      await page.locator('#notice.ok').getByText('by token:admin').waitFor()
      await page.locator('#parked-empty').waitFor()

      // The instance's command: its event now done by the projection, released by hand.
      await page.goto(`${url}/console#/command/${noteCommand}`)
      await page.locator('#command-status', { hasText: 'COMPLETED' }).waitFor()
      const byHand = page.locator('section.event tr', { hasText: 'projection_worker' })
      await byHand.getByText('token:admin at').waitFor({ timeout: 30_000 })
      await byHand.locator('.st-done').waitFor({ timeout: 30_000 })

      // A new command, followed in the command page to its completion.
      const submitted = await submit(url, { id: 'n2', data: { text: 'followed' } })
      assert.equal(submitted.status, 202)
      const { command_id: followed } = (await submitted.json()) as { command_id: string }
      await page.click('nav a[data-page=command]')
      await page.fill('#command-form input[name=id]', followed)
      await page.click('#command-form button')
      await page.locator('#command-status', { hasText: 'COMPLETED' }).waitFor()
      await page.locator('section.event .st-done').first().waitFor()
      await page.locator('section.event summary').first().click()
      await shot(page, 'command')

      // History: hostile data is shown as text and never runs.
      await page.click('nav a[data-page=history]')
      await page.fill('#history-form input[name=type]', noteEvent.aggregate_type)
      await page.fill('#history-form input[name=id]', noteEvent.aggregate_id)
      await page.click('#history-form button')
      const first = page.locator('#events details').first()
      await first.waitFor()
      await first.locator('summary').click()
      await first.locator('pre').getByText('<img src=x onerror=').waitFor()
      assert.equal(await page.evaluate('typeof window.__xss'), 'undefined')
      assert.equal(await page.locator('#page img, #page script').count(), 0)
      await shot(page, 'history')

      assert.deepEqual(errors, [], 'no script error in the page')
    } finally {
      await browser.close()
      await cairn?.stop('SIGTERM')
      await rm(dataDir, { recursive: true, force: true })
    }
  },
)
