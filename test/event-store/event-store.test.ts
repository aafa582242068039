import { eventStoreContract } from '../contract/event-store.ts'
import { writeSideCases } from '../support/write-side.ts'

// Embedded mode's backends: the filesystem and PGlite, no services needed.
eventStoreContract(writeSideCases(false))
