import { duplicatePublishContract } from '../contract/worker.ts'
import { distributedWorld } from '../support/publisher-world.ts'

duplicatePublishContract([distributedWorld()])
