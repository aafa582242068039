import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { accessSync, closeSync, constants, openSync, readFileSync, rmSync, statSync } from 'node:fs'
import { readdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import pg from 'pg'

/**
 * A PostgreSQL cluster of one test's own, for serial tests that stop it, or put an older copy of
 * its data back, under a running system (the shared server of `scripts/services.sh` serves every
 * other test and must not be touched). It runs the binaries that script installs, as the
 * `postgres` OS user when the tests run as root (initdb and postgres refuse root), listens on
 * 127.0.0.1 only, on a free port that stays the same across stops and restores.
 */
export type PrivatePostgres = {
  /** `postgres://user:password@127.0.0.1:<port>/<database>`. */
  readonly url: string
  readonly port: number
  /** Everything it made: the data directory, the copies, the server's log. */
  readonly dir: string
  /**
   * A consistent copy of the cluster taken with pg_basebackup while it runs (its clients notice
   * nothing; a restored copy replays the WAL it holds when it starts); returns the copy's
   * directory, which `restore` takes as often as wanted. Needs the server running.
   */
  backup(): Promise<string>
  /**
   * Puts a copy back: stops the server (fast shutdown: sessions end, new connections are refused),
   * replaces its data directory by the copy, starts it again and waits until it accepts
   * connections. Ends with the server running, whether it ran before or not.
   */
  restore(copy: string): Promise<void>
  /** Fast shutdown; does nothing when stopped. */
  stop(): Promise<void>
  /** Starts it again on the same port and waits until it accepts connections. */
  start(): Promise<void>
  /** Stops the server and deletes `dir`; safe to call twice. */
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

export type PrivatePostgresOptions = {
  /** The role (a superuser) and its password (default cairn / cairn, as scripts/services.sh). */
  readonly user?: string
  readonly password?: string
  /** The database the url names (default cairn). */
  readonly database?: string
  /** More server settings, by their postgresql.conf name, e.g. `{ max_connections: '20' }`. */
  readonly settings?: Readonly<Record<string, string>>
  /** Longest start, stop, backup or restore (default 60,000 ms); each fails with the log's end. */
  readonly timeoutMs?: number
}

const execFileAsync = promisify(execFile)
const SERVICES = fileURLToPath(new URL('../../scripts/services.sh', import.meta.url))
const NEEDED = ['initdb', 'postgres', 'pg_basebackup'] as const
const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/
/** Directory names carry the owner's pid, so that a later run can tell a leftover from a live one. */
const DIR_PREFIX = 'cairn-pg-'
const DIR_OWNER = new RegExp(`^${DIR_PREFIX}(\\d+)-`)

/**
 * The directory of the PostgreSQL binaries `scripts/services.sh` installs (its PG_MAJOR, read
 * from the script so that the version is stated once); throws, saying how to install them, when
 * they are missing.
 */
export const findPostgresBin = (): string => {
  const major = /^PG_MAJOR=(\d+)$/m.exec(readFileSync(SERVICES, 'utf8'))?.[1]
  if (major === undefined) throw new Error(`no PG_MAJOR=<n> line in ${SERVICES}`)
  const bin = `/usr/lib/postgresql/${major}/bin`
  const missing = NEEDED.filter((name) => {
    try {
      accessSync(path.join(bin, name), constants.X_OK)
      return false
    } catch {
      return true
    }
  })
  if (missing.length > 0) {
    throw new Error(
      `PostgreSQL ${major} is not installed (${missing.join(', ')} missing in ${bin}): ` +
        'run `scripts/services.sh up` (or `scripts/services.sh install postgres`), which installs it.',
    )
  }
  return bin
}

/**
 * How commands run as the server's OS user: setpriv execs the command itself (no wrapper process
 * like runuser's, so a timeout kills the command) and can tie the server's life to ours.
 */
const asServerUser = (): string[] =>
  process.getuid?.() === 0 ? ['--reuid=postgres', '--regid=postgres', '--init-groups'] : []

type RunOptions = { readonly timeoutMs: number; readonly env?: NodeJS.ProcessEnv }

/** Runs a command as the server's OS user, from `/` (it may not enter our working directory). */
const runAsServer = async (file: string, args: string[], options: RunOptions): Promise<string> => {
  try {
    const { stdout } = await execFileAsync('setpriv', [...asServerUser(), '--', file, ...args], {
      cwd: '/',
      timeout: options.timeoutMs,
      killSignal: 'SIGKILL',
      ...(options.env === undefined ? {} : { env: options.env }),
    })
    return stdout
  } catch (error) {
    const e = error as { killed?: boolean; stderr?: string; stdout?: string; message?: string }
    const why = e.killed === true ? `timed out after ${options.timeoutMs} ms` : 'failed'
    const output = `${e.stderr ?? ''}${e.stdout ?? ''}`.trim() || (e.message ?? String(error))
    throw new Error(`${path.basename(file)} ${why}: ${tail(output, 20)}`, { cause: error })
  }
}

const tail = (text: string, lines: number): string => text.split('\n').slice(-lines).join('\n')

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** True if `promise` settles within `ms` (its timer cleared, so that it holds no process up). */
const settlesWithin = async (promise: Promise<unknown>, ms: number): Promise<boolean> => {
  let timer: ReturnType<typeof setTimeout> | undefined
  const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)))
  try {
    return await Promise.race([promise.then(() => true), late])
  } finally {
    clearTimeout(timer)
  }
}

/** A port free now on 127.0.0.1 (the kernel's pick). */
/**
 * A free port below 32768, outside the kernel's ephemeral range: the server is stopped and
 * started again on it while clients keep reconnecting, and a client reconnecting to a closed port
 * inside that range can be given the port itself as its source and connect to itself, which
 * keeps the port taken (scripts/services.sh says more).
 */
const freePort = async (): Promise<number> => {
  for (let attempt = 0; ; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000)
    const server = net.createServer()
    const bound = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false))
      server.listen(port, '127.0.0.1', () => resolve(true))
    })
    if (bound) {
      await new Promise<void>((resolve) => server.close(() => resolve()))
      return port
    }
    if (attempt >= 50) throw new Error('no free port from 20000 to 31999 after 50 tries')
  }
}

/** True while `pid` is a live process (a zombie, exited but not reaped, counts as gone). */
const isRunning = (pid: number): boolean => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The state follows the command name, which is in parentheses and may hold any character.
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z'
  } catch {
    return false
  }
}

/** Synchronous stops for the process's exit, by directory: a test that never closes leaks nothing. */
const atExit = new Map<string, () => void>()
let exitHookInstalled = false
const onExit = (dir: string, cleanup: () => void): void => {
  atExit.set(dir, cleanup)
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.on('exit', () => {
    for (const cleanup of atExit.values()) cleanup()
  })
}

/**
 * Deletes the directories of earlier runs whose process is gone (killed before its exit hook
 * ran; its server, tied to it by setpriv's parent-death signal, went with it).
 */
const sweepLeftovers = async (base: string): Promise<void> => {
  const names = await readdir(base).catch(() => [])
  for (const name of names) {
    const owner = DIR_OWNER.exec(name)?.[1]
    if (owner === undefined || Number(owner) === process.pid || isRunning(Number(owner))) continue
    const dir = path.join(base, name)
    const server = await readFile(path.join(dir, 'data', 'postmaster.pid'), 'utf8').catch(() => '')
    const serverPid = Number(server.split('\n')[0])
    if (serverPid > 0 && isRunning(serverPid)) continue
    await rm(dir, { recursive: true, force: true }).catch(() => {})
  }
}

/** Makes a fresh directory owned by the server's OS user, in the first base it can write. */
const makeDir = async (timeoutMs: number): Promise<string> => {
  const failures: string[] = []
  // /var/tmp when the temporary directory is one the postgres user cannot enter.
  for (const base of new Set([os.tmpdir(), '/var/tmp'])) {
    await sweepLeftovers(base)
    try {
      const template = `${DIR_PREFIX}${process.pid}-XXXXXX`
      return (await runAsServer('mktemp', ['-d', '-p', base, template], { timeoutMs })).trim()
    } catch (error) {
      failures.push(`${base}: ${(error as Error).message}`)
    }
  }
  throw new Error(`no directory the postgres OS user can write: ${failures.join('; ')}`)
}

export const startPrivatePostgres = async (
  options: PrivatePostgresOptions = {},
): Promise<PrivatePostgres> => {
  const user = options.user ?? 'cairn'
  const password = options.password ?? 'cairn'
  const database = options.database ?? 'cairn'
  const timeoutMs = options.timeoutMs ?? 60_000
  for (const [what, name] of [
    ['user', user],
    ['database', database],
  ] as const) {
    if (!IDENTIFIER.test(name))
      throw new Error(`${what} ${JSON.stringify(name)} must be a lower-case identifier`)
  }
  const bin = findPostgresBin()
  if (process.getuid?.() === 0) {
    await execFileAsync('id', ['-u', 'postgres']).catch((error: unknown) => {
      throw new Error(
        'the postgres OS user is missing: run `scripts/services.sh up`, which installs PostgreSQL',
        { cause: error },
      )
    })
  }

  const dir = await makeDir(timeoutMs)
  const data = path.join(dir, 'data')
  const logFile = path.join(dir, 'postgres.log')
  let server: { readonly child: ChildProcess; readonly exited: Promise<void> } | undefined
  let port = 0
  let copies = 0

  const logTail = (): string => {
    try {
      return `\n---- last 40 lines of the server's log (${logFile}) ----\n${tail(readFileSync(logFile, 'utf8').trimEnd(), 40)}`
    } catch {
      return ` (no log at ${logFile})`
    }
  }

  // Exiting without close(): stop at once (nothing is worth keeping) and delete everything.
  onExit(dir, () => {
    const pid = server?.child.pid
    try {
      if (pid !== undefined && isRunning(pid)) {
        process.kill(pid, 'SIGQUIT')
        // No event loop any more: wait (up to 5 s) by blocking.
        const pause = new Int32Array(new SharedArrayBuffer(4))
        for (let i = 0; i < 250 && isRunning(pid); i++) Atomics.wait(pause, 0, 0, 20)
      }
      rmSync(dir, { recursive: true, force: true, maxRetries: 3 })
    } catch {
      // Exiting anyway; a later run sweeps what is left.
    }
  })

  const settings = (): string[] =>
    Object.entries({
      listen_addresses: '127.0.0.1',
      port: String(port),
      // TCP only: no socket file to place within the ~107 bytes a socket path may have.
      unix_socket_directories: '',
      // A test's cluster need not survive a machine crash: no flushes to disk.
      fsync: 'off',
      ...options.settings,
    }).flatMap(([name, value]) => ['-c', `${name}=${value}`])

  /** Waits until a session on the `postgres` database answers, or the server exits, or time is up. */
  const waitReady = async (exited: Promise<void>): Promise<void> => {
    const deadline = Date.now() + timeoutMs
    let gone = false
    void exited.then(() => (gone = true))
    let last: unknown
    while (!gone && Date.now() < deadline) {
      const client = new pg.Client({
        host: '127.0.0.1',
        port,
        user,
        password,
        database: 'postgres',
        connectionTimeoutMillis: Math.max(1, Math.min(2_000, deadline - Date.now())),
      })
      client.on('error', () => {})
      try {
        await client.connect()
        await client.query('SELECT 1')
        return
      } catch (error) {
        last = error
      } finally {
        await client.end().catch(() => {})
      }
      await sleep(25)
    }
    if (gone) throw new Error(`PostgreSQL exited during startup on 127.0.0.1:${port}${logTail()}`)
    throw new Error(
      `PostgreSQL did not accept connections on 127.0.0.1:${port} within ${timeoutMs} ms ` +
        `(last error: ${last instanceof Error ? last.message : String(last)})${logTail()}`,
    )
  }

  /**
   * Starts the postmaster as our child and waits until it is ready; `port-taken` when another
   * process holds the port (its start fails at once).
   */
  const launch = async (): Promise<'ready' | 'port-taken'> => {
    const logSize = statSync(logFile, { throwIfNoEntry: false })?.size ?? 0
    const log = openSync(logFile, 'a')
    // --pdeathsig: if this process (strictly, the thread that spawns) dies without its exit hook
    // (SIGKILL), the server stops too.
    const child = spawn(
      'setpriv',
      [
        ...asServerUser(),
        '--pdeathsig=SIGQUIT',
        '--',
        path.join(bin, 'postgres'),
        '-D',
        data,
        ...settings(),
      ],
      { cwd: '/', stdio: ['ignore', log, log] },
    )
    closeSync(log)
    // A test that forgets close() must not hang the run: the exit hook stops the server.
    child.unref()
    const exited = new Promise<void>((resolve) => {
      child.once('exit', () => resolve())
      child.once('error', () => resolve())
    })
    server = { child, exited }
    try {
      await waitReady(exited)
      return 'ready'
    } catch (error) {
      await halt().catch(() => {})
      const startLog = (await readFile(logFile, 'utf8')).slice(logSize)
      if (/could not create any TCP\/IP sockets/.test(startLog)) return 'port-taken'
      throw error
    }
  }

  const launchOnSamePort = async (): Promise<void> => {
    if ((await launch()) === 'port-taken') {
      throw new Error(
        `port ${port} was taken by another process while PostgreSQL was stopped${logTail()}`,
      )
    }
  }

  /** Fast shutdown, bounded: past the deadline the server is killed and the call fails. */
  const halt = async (): Promise<void> => {
    const current = server
    if (current === undefined) return
    current.child.kill('SIGINT')
    const stopped = await settlesWithin(current.exited, timeoutMs)
    if (!stopped) {
      current.child.kill('SIGQUIT')
      if (!(await settlesWithin(current.exited, 5_000))) current.child.kill('SIGKILL')
      await settlesWithin(current.exited, 5_000)
    }
    server = undefined
    if (!stopped) {
      throw new Error(
        `PostgreSQL on 127.0.0.1:${port} did not stop within ${timeoutMs} ms; killed it${logTail()}`,
      )
    }
  }

  /** Operations one at a time: a restore never interleaves with a stop or a backup. */
  let queue: Promise<unknown> = Promise.resolve()
  let closed: Promise<void> | undefined
  const serially = <T>(what: string, fn: () => Promise<T>): Promise<T> => {
    if (closed !== undefined)
      return Promise.reject(new Error(`private PostgreSQL: ${what} after close()`))
    const result = queue.then(fn)
    queue = result.catch(() => {})
    return result
  }

  const close = (): Promise<void> =>
    (closed ??= queue.then(async () => {
      try {
        await halt()
      } finally {
        await rm(dir, { recursive: true, force: true, maxRetries: 3 })
        atExit.delete(dir)
      }
    }))

  try {
    const pwfile = path.join(dir, 'pwfile')
    // Readable by the postgres OS user; `dir` (its own, mode 700) keeps it private.
    await writeFile(pwfile, password, { mode: 0o644 })
    await runAsServer(
      path.join(bin, 'initdb'),
      [
        ...['-D', data, '-U', user, `--pwfile=${pwfile}`, '-E', 'UTF8', '--locale=C.UTF-8'],
        ...['--auth-local=trust', '--auth-host=scram-sha-256', '--no-sync', '--no-instructions'],
      ],
      { timeoutMs },
    )
    await rm(pwfile)
    // The kernel's free port may be taken before the server binds it: then another one.
    for (let attempt = 1; ; attempt++) {
      port = await freePort()
      if ((await launch()) === 'ready') break
      if (attempt === 3)
        throw new Error(`3 free ports were taken before PostgreSQL bound them${logTail()}`)
    }
    if (database !== 'postgres') {
      const admin = new pg.Client({
        host: '127.0.0.1',
        port,
        user,
        password,
        database: 'postgres',
        connectionTimeoutMillis: timeoutMs,
        query_timeout: timeoutMs,
      })
      await admin.connect()
      try {
        await admin.query(`CREATE DATABASE ${database}`)
      } finally {
        await admin.end()
      }
    }
  } catch (error) {
    await close().catch(() => {})
    throw error
  }

  const url = `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`
  const start = async (): Promise<void> => {
    if (server === undefined) await launchOnSamePort()
  }

  return {
    url,
    port,
    dir,
    backup: () =>
      serially('backup', async () => {
        if (server === undefined)
          throw new Error('private PostgreSQL: backup() needs the server running')
        const copy = path.join(dir, 'copies', `copy-${++copies}`)
        await runAsServer(
          path.join(bin, 'pg_basebackup'),
          [
            ...['-D', copy, '-h', '127.0.0.1', '-p', String(port), '-U', user, '-w'],
            // A fast checkpoint, or the backup waits for the spread one (minutes).
            ...['--checkpoint=fast', '--wal-method=stream', '--no-sync', '--no-manifest'],
          ],
          { timeoutMs, env: { ...process.env, PGPASSWORD: password } },
        )
        return copy
      }),
    restore: (copy) =>
      serially('restore', async () => {
        if (statSync(path.join(copy, 'PG_VERSION'), { throwIfNoEntry: false }) === undefined) {
          throw new Error(`${copy} is not a PostgreSQL data directory (no PG_VERSION)`)
        }
        // Copied before the stop, so that the server is down only for the swap and the start.
        const next = path.join(dir, 'data.next')
        const old = path.join(dir, 'data.old')
        await rm(next, { recursive: true, force: true })
        await runAsServer('cp', ['-a', copy, next], { timeoutMs })
        await halt()
        await rename(data, old)
        await rename(next, data)
        await launchOnSamePort()
        await rm(old, { recursive: true, force: true })
      }),
    stop: () => serially('stop', halt),
    start: () => serially('start', start),
    close,
    [Symbol.asyncDispose]: close,
  }
}
