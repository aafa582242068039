import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { loadConfig } from '../../src/config/env.ts'
import { openCairn } from '../../src/config/runtime.ts'
import type { CairnRuntime } from '../../src/config/runtime.ts'
import { silentLogger } from '../../src/core/ports/logger.ts'

/** Settings that make a test runtime react quickly (short polls, leases and heartbeats). */
export const FAST_ENV: Readonly<Record<string, string>> = {
  LOG_LEVEL: 'silent',
  EVENT_PUBLISHER_POLL_INTERVAL_SECONDS: '1',
  PROCESSED_EVENT_HEARTBEAT_INTERVAL_SECONDS: '2',
  PROCESSED_EVENT_LEASE_TIMEOUT_SECONDS: '30',
  EVENT_STORE_MAX_INDEX_DELAY_SECONDS: '2',
  EVENT_STORE_MAX_CLOCK_SKEW_SECONDS: '1',
}

export type Embedded = {
  readonly runtime: CairnRuntime
  readonly dataDir: string
  /** Closes the runtime (the data stays for a reopen). */
  close(): Promise<void>
  /** Closes and removes the data directory. */
  destroy(): Promise<void>
}

/** All of cairn in this process, embedded mode (filesystem bucket, PGlite, in-process bus). */
export const openEmbedded = async (
  options: { dataDir?: string; env?: Record<string, string> } = {},
): Promise<Embedded> => {
  const dataDir = options.dataDir ?? (await mkdtemp(path.join(tmpdir(), 'cairn-oms-')))
  const config = loadConfig({
    ...FAST_ENV,
    CAIRN_MODE: 'embedded',
    CAIRN_DATA_DIR: dataDir,
    ...options.env,
  })
  const runtime = await openCairn(config, silentLogger, {
    oms: true,
    publisher: true,
    workers: ['ontology', 'instance', 'projection'],
  })
  let closed = false
  const close = async () => {
    if (closed) return
    closed = true
    await runtime.close()
  }
  return {
    runtime,
    dataDir,
    close,
    async destroy() {
      await close()
      await rm(dataDir, { recursive: true, force: true })
    },
  }
}
