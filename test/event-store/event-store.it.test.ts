import { eventStoreContract } from '../contract/event-store.ts'
import { writeSideCases } from '../support/write-side.ts'

// MinIO and SeaweedFS with PostgreSQL.
eventStoreContract(writeSideCases(true).slice(1))
