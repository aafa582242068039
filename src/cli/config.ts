import type { Command } from 'commander'
import { loadConfig, redactedConfig } from '../config/env.ts'

export const registerConfig = (program: Command): void => {
  program
    .command('config')
    .description('validate the environment and print the effective configuration (secrets hidden)')
    .action(() => {
      process.stdout.write(`${JSON.stringify(redactedConfig(loadConfig()), null, 2)}\n`)
    })
}
