import { Admin } from '@platformatic/kafka'
import { kafkaBrokers } from '../lib/scenario.ts'

/** Deletes the run's topics (and consumer groups), so repeated runs leave nothing behind. */
export const deleteTopics = async (topics: string[], groups: string[] = []): Promise<void> => {
  const admin = new Admin({ clientId: 'cairn-bench-cleanup', bootstrapBrokers: kafkaBrokers() })
  try {
    if (groups.length > 0) await admin.deleteGroups({ groups }).catch(() => {})
    await admin.deleteTopics({ topics }).catch(() => {})
  } finally {
    await admin.close()
  }
}
