import { runDomain } from 'cairn'
import { ledger } from './domain.ts'

// The ledger as a service: embedded by default (no services needed), configured from the
// environment like `cairn start` (CAIRN_MODE=distributed with S3, Kafka and PostgreSQL).
await runDomain(ledger)
