import http from 'node:http'
import type { Command } from 'commander'
import { closeAll, openBus, openPublisher, openWriteSide } from '../config/compose.ts'
import { cliContext } from './context.ts'

/**
 * `cairn start`: runs cairn with the configured backends (embedded by default: a filesystem bucket,
 * PGlite under CAIRN_DATA_DIR and the in-process bus): the write side and the publisher, with health
 * on CAIRN_HTTP_HOST:CAIRN_HTTP_PORT, until SIGINT or SIGTERM; then closes in reverse order.
 */
export const registerStart = (program: Command): void => {
  program
    .command('start')
    .description('run cairn (embedded mode by default: no services needed) until interrupted')
    .action(async () => {
      const { config, logger } = cliContext()
      const ws = await openWriteSide(config, logger)
      const bus = openBus(config, logger)
      const publisher = openPublisher(config, ws, bus, logger)
      const publishing = publisher.run()
      let ready = true
      const server = http.createServer((req, res) => {
        const reply = (status: number, body: unknown) => {
          res.writeHead(status, { 'content-type': 'application/json' })
          res.end(JSON.stringify(body))
        }
        if (req.url === '/healthz') return reply(200, { status: 'ok' })
        if (req.url === '/readyz')
          return reply(ready ? 200 : 503, { status: ready ? 'ready' : 'stopping' })
        reply(404, { type: 'about:blank', title: 'Not Found', status: 404 })
      })
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen(config.http.port, config.http.host, resolve)
      })
      const address = server.address()
      const port = typeof address === 'object' && address !== null ? address.port : config.http.port
      logger.info(
        {
          mode: config.mode,
          bucket: ws.objectStore.describe,
          registry: ws.sql.describe,
          http: `http://${config.http.host}:${port}`,
        },
        'cairn is running; press Ctrl+C to stop',
      )
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve)
        process.once('SIGTERM', resolve)
      })
      ready = false
      logger.info({}, 'stopping')
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await closeAll(
        [
          { name: 'write side', close: () => ws.close() },
          { name: 'bus', close: () => bus.close() },
          { name: 'publisher', close: () => publisher.close().then(() => publishing) },
        ],
        logger,
      )
      logger.info({}, 'stopped')
    })
}
