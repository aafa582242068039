import { objectStoreContract } from '../../contract/object-store.ts'
import { s3StoreCases } from '../../support/adapters.ts'

// MinIO and SeaweedFS: two independent S3 implementations.
objectStoreContract(s3StoreCases())
