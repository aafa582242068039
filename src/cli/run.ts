import { isCairnError } from '../core/errors.ts'

/** Runs a CLI action: a CairnError prints its message (no stack) and exits 1. */
export const runCommand = async (fn: () => Promise<unknown>): Promise<void> => {
  try {
    await fn()
  } catch (error) {
    if (isCairnError(error)) {
      process.stderr.write(`cairn: ${error.message}\n`)
    } else {
      process.stderr.write(
        `cairn: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
      )
    }
    process.exitCode = 1
  }
}
