import { objectStoreContract } from '../../contract/object-store.ts'
import { fsStoreCase } from '../../support/adapters.ts'

objectStoreContract([fsStoreCase()])
