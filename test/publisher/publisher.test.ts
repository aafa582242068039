import { publisherContract } from '../contract/publisher.ts'
import { embeddedWorld } from '../support/publisher-world.ts'

publisherContract([embeddedWorld()])
