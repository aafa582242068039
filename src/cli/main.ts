#!/usr/bin/env node
import { Command } from 'commander'
import { registerAppend } from './append.ts'
import { registerConfig } from './config.ts'
import { registerHistory } from './history.ts'
import { registerMigrate } from './migrate.ts'
import { registerOperate } from './operate.ts'
import { registerProbe } from './probe.ts'
import { registerQuarantine } from './quarantine.ts'
import { registerStart } from './start.ts'
import { runCommand } from './run.ts'

const program = new Command()
  .name('cairn')
  .description(
    'cairn: an event-sourcing backbone. The bucket is the single source of truth.\n' +
      'Configuration comes from the environment (docs/configuration.md); CAIRN_MODE=embedded needs no services.',
  )
  .showHelpAfterError()

registerStart(program)
registerMigrate(program)
registerAppend(program)
registerHistory(program)
registerProbe(program)
registerQuarantine(program)
registerOperate(program)
registerConfig(program)

await runCommand(() => program.parseAsync(process.argv))
