import { Admin } from '@platformatic/kafka'
import { kafkaBrokers } from '../lib/scenario.ts'

const withAdmin = async <T>(fn: (admin: Admin) => Promise<T>): Promise<T> => {
  const admin = new Admin({ clientId: 'cairn-bench-cleanup', bootstrapBrokers: kafkaBrokers() })
  try {
    return await fn(admin)
  } finally {
    await admin.close()
  }
}

/**
 * Deletes those of the topics and consumer groups that exist (a scenario that failed early may
 * not have made them all); returns how many there were.
 */
export const deleteTopics = (
  topics: readonly string[],
  groups: readonly string[] = [],
): Promise<{ topics: number; groups: number }> =>
  withAdmin(async (admin) => {
    const existingTopics = new Set(await admin.listTopics())
    const existingGroups = groups.length === 0 ? new Map() : await admin.listGroups()
    const t = topics.filter((name) => existingTopics.has(name))
    const g = groups.filter((name) => existingGroups.has(name))
    if (g.length > 0) await admin.deleteGroups({ groups: g })
    if (t.length > 0) await admin.deleteTopics({ topics: t })
    return { topics: t.length, groups: g.length }
  })

/** The broker's topics (internal ones left out) and consumer groups. */
export const listTopicsAndGroups = (): Promise<{ topics: string[]; groups: string[] }> =>
  withAdmin(async (admin) => ({
    topics: await admin.listTopics(),
    groups: [...(await admin.listGroups()).keys()],
  }))
