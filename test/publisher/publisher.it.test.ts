import { publisherContract } from '../contract/publisher.ts'
import { distributedWorld } from '../support/publisher-world.ts'

publisherContract([distributedWorld()])
