import type { Command } from 'commander'
import { openObjectStore } from '../config/compose.ts'
import { probeObjectStore } from '../event-store/probe.ts'
import { cliContext } from './context.ts'

export const registerProbe = (program: Command): void => {
  program
    .command('probe')
    .description('check that the configured bucket honours create-only and conditional writes')
    .action(async () => {
      const { config } = cliContext({ quiet: true })
      await using store = await openObjectStore(config)
      const report = await probeObjectStore(store)
      for (const c of report.checks)
        process.stdout.write(`${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}\n`)
      process.stdout.write(
        report.ok ? `${store.describe} is conformant\n` : `${store.describe} is NOT conformant\n`,
      )
      if (!report.ok) process.exitCode = 1
    })
}
