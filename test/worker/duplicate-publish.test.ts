import { duplicatePublishContract } from '../contract/worker.ts'
import { embeddedWorld } from '../support/publisher-world.ts'

duplicatePublishContract([embeddedWorld()])
