import { createHash, randomBytes } from 'node:crypto'
import { constants } from 'node:fs'
import { link, mkdir, open, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises'
import path from 'node:path'
import { CairnError, ErrorCode } from '../../../core/errors.ts'
import type {
  ConditionalPutResult,
  ListPage,
  ObjectStore,
  PutOutcome,
  StoredObject,
} from '../../../core/ports/object-store.ts'

export type FsObjectStoreOptions = {
  /** Directory that holds the objects; created if missing. */
  readonly root: string
}

const TMP_PREFIX = '.tmp-'
const LOCK_SUFFIX = '.cairn-lock'
const STALE_LOCK_MS = 30_000

/**
 * Objects as files under a root directory, with the guarantees of the port:
 * create-only writes are a hard link of a fully written, fsynced temporary file (atomic, fails if
 * the name exists), followed by an fsync of the directory, so `created` means durable.
 */
export const createFsObjectStore = async (options: FsObjectStoreOptions): Promise<ObjectStore> => {
  const root = path.resolve(options.root)
  await mkdir(root, { recursive: true })
  const describe = `fs:${root}`

  const toPath = (key: string): string => {
    const segments = key.split('/')
    for (const s of segments) {
      if (
        s === '' ||
        s === '.' ||
        s === '..' ||
        s.startsWith(TMP_PREFIX) ||
        s.endsWith(LOCK_SUFFIX)
      ) {
        throw new CairnError(
          ErrorCode.OBJECT_STORE_ERROR,
          `key not allowed on ${describe}: ${JSON.stringify(key)}`,
        )
      }
    }
    return path.join(root, ...segments)
  }

  const fsyncDir = async (dir: string): Promise<void> => {
    const handle = await open(dir, constants.O_RDONLY)
    try {
      await handle.sync()
    } finally {
      await handle.close()
    }
  }

  /** Creates the parent directories of `file`, fsyncing each directory that gained an entry. */
  const ensureParent = async (file: string): Promise<void> => {
    const dir = path.dirname(file)
    const first = await mkdir(dir, { recursive: true })
    if (first === undefined) return
    let d = dir
    const toSync: string[] = []
    while (d.length >= first.length) {
      toSync.push(path.dirname(d))
      d = path.dirname(d)
    }
    for (const s of toSync) await fsyncDir(s)
  }

  const writeTemp = async (file: string, body: Uint8Array): Promise<string> => {
    await ensureParent(file)
    const tmp = path.join(path.dirname(file), `${TMP_PREFIX}${randomBytes(8).toString('hex')}`)
    const handle = await open(tmp, 'wx')
    try {
      await handle.writeFile(body)
      await handle.sync()
    } finally {
      await handle.close()
    }
    return tmp
  }

  const etagOf = (body: Uint8Array): string =>
    `"${createHash('sha256').update(body).digest('hex').slice(0, 32)}"`

  const readIfExists = async (file: string): Promise<Buffer | null> => {
    try {
      return await readFile(file)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null
      throw error
    }
  }

  /** A cross-process lock file for the conditional overwrite (only the checkpoint uses it). */
  const withLock = async <T>(file: string, fn: () => Promise<T>): Promise<T> => {
    const lock = `${file}${LOCK_SUFFIX}`
    await ensureParent(file)
    for (let attempt = 0; ; attempt++) {
      try {
        const h = await open(lock, 'wx')
        await h.close()
        break
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
        const info = await stat(lock).catch(() => null)
        if (info !== null && Date.now() - info.mtimeMs > STALE_LOCK_MS) {
          await rm(lock, { force: true })
          continue
        }
        await new Promise((r) => setTimeout(r, Math.min(50, 2 ** attempt)))
      }
    }
    try {
      return await fn()
    } finally {
      await rm(lock, { force: true })
    }
  }

  const sortName = (e: { name: string; isDirectory(): boolean }) =>
    e.isDirectory() ? `${e.name}/` : e.name

  /** Walks keys under `dirKey` (ending in `/` or empty) in lexical order, pruning what is ≤ startAfter. */
  async function* walk(
    dirKey: string,
    namePrefix: string,
    startAfter: string | undefined,
  ): AsyncGenerator<string> {
    let entries
    try {
      entries = await readdir(dirKey === '' ? root : path.join(root, dirKey), {
        withFileTypes: true,
      })
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return
      throw error
    }
    const visible = entries
      .filter(
        (e) =>
          e.name.startsWith(namePrefix) &&
          !e.name.startsWith(TMP_PREFIX) &&
          !e.name.endsWith(LOCK_SUFFIX),
      )
      .map((e) => ({ key: dirKey + sortName(e), dir: e.isDirectory() }))
      .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    for (const e of visible) {
      if (e.dir) {
        // Every key inside starts with e.key; skip the directory when all of them are ≤ startAfter.
        if (startAfter !== undefined && e.key < startAfter && !startAfter.startsWith(e.key))
          continue
        yield* walk(e.key, '', startAfter)
      } else if (startAfter === undefined || e.key > startAfter) {
        yield e.key
      }
    }
  }

  const close = async (): Promise<void> => {}

  return {
    describe,
    async putIfAbsent(key, body): Promise<PutOutcome> {
      const file = toPath(key)
      const tmp = await writeTemp(file, body)
      try {
        await link(tmp, file)
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'EEXIST') return 'exists'
        throw error
      } finally {
        await unlink(tmp).catch(() => {})
      }
      await fsyncDir(path.dirname(file))
      return 'created'
    },
    async putIfMatch(key, body, ifMatch): Promise<ConditionalPutResult> {
      const file = toPath(key)
      return withLock(file, async () => {
        const current = await readIfExists(file)
        const matches =
          ifMatch === null ? current === null : current !== null && etagOf(current) === ifMatch
        if (!matches) return { outcome: 'precondition_failed' }
        const tmp = await writeTemp(file, body)
        await rename(tmp, file)
        await fsyncDir(path.dirname(file))
        return { outcome: 'written', etag: etagOf(body) }
      })
    },
    async get(key): Promise<StoredObject | null> {
      const body = await readIfExists(toPath(key))
      return body === null ? null : { body, etag: etagOf(body) }
    },
    async list(prefix, listOptions = {}): Promise<ListPage> {
      const limit = listOptions.limit ?? 1000
      const cut = prefix.lastIndexOf('/') + 1
      const keys: string[] = []
      for await (const key of walk(
        prefix.slice(0, cut),
        prefix.slice(cut),
        listOptions.startAfter,
      )) {
        if (keys.length === limit) return { keys, next: keys[keys.length - 1] as string }
        keys.push(key)
      }
      return { keys }
    },
    close,
    [Symbol.asyncDispose]: close,
  }
}
