import { busContract } from '../../contract/bus.ts'
import { kafkaBusCase } from '../../support/bus.ts'

busContract([kafkaBusCase()])
