import net from 'node:net'

/**
 * A TCP relay on 127.0.0.1 in front of a real server, for outage tests of one client without
 * stopping the shared service: `freeze` makes the server look hung (connections are accepted
 * and kept, nothing is relayed: what SIGSTOP does to a server), `cut` makes it look gone
 * (connections are closed and new ones refused at once: a stopped or killed server), `restore`
 * brings it back.
 */
export type FreezeProxy = {
  readonly host: string
  readonly port: number
  freeze(): void
  cut(): void
  restore(): void
  /** Connections open now (relayed pairs). */
  connections(): number
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

export const startFreezeProxy = async (target: {
  readonly host: string
  readonly port: number
}): Promise<FreezeProxy> => {
  let state: 'open' | 'frozen' | 'cut' = 'open'
  const pairs = new Set<{ client: net.Socket; server: net.Socket }>()
  const proxy = net.createServer((client) => {
    if (state === 'cut') {
      client.destroy()
      return
    }
    const server = net.connect(target.port, target.host)
    const pair = { client, server }
    pairs.add(pair)
    const end = (): void => {
      pairs.delete(pair)
      client.destroy()
      server.destroy()
    }
    client.on('error', end).on('close', end)
    server.on('error', end).on('close', end)
    client.pipe(server)
    server.pipe(client)
    if (state === 'frozen') {
      client.pause()
      server.pause()
    }
  })
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve))
  const address = proxy.address() as net.AddressInfo
  const close = async (): Promise<void> => {
    for (const { client, server } of pairs) {
      client.destroy()
      server.destroy()
    }
    pairs.clear()
    await new Promise<void>((resolve) => proxy.close(() => resolve()))
  }
  return {
    host: '127.0.0.1',
    port: address.port,
    freeze() {
      state = 'frozen'
      for (const { client, server } of pairs) {
        client.pause()
        server.pause()
      }
    },
    cut() {
      state = 'cut'
      for (const { client, server } of pairs) {
        client.destroy()
        server.destroy()
      }
      pairs.clear()
    },
    restore() {
      state = 'open'
      for (const { client, server } of pairs) {
        client.resume()
        server.resume()
      }
    },
    connections: () => pairs.size,
    close,
    [Symbol.asyncDispose]: close,
  }
}

/** The URL with its host and port replaced by the proxy's (a database URL, an endpoint). */
export const viaProxy = (url: string, proxy: FreezeProxy): string => {
  const u = new URL(url)
  u.hostname = proxy.host
  u.port = String(proxy.port)
  return u.toString()
}
