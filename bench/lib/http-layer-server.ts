// One HTTP server of the `http-layer` scenario, in a process of its own: the same route (a
// command's POST, its body validated against the reference domain's schema, a bearer token
// checked, answered 202 without storing anything) on node:http alone, on Fastify, or on cairn's
// own pipeline. Prints `listening <port>` and serves until SIGTERM.
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto'
import http from 'node:http'
import Fastify from 'fastify'
import { silentLogger } from '../../src/core/ports/logger.ts'
import { CreateInstanceBody, ClassId, DatabaseName } from '../../src/domain/requests.ts'
import { parseCreateInstance } from '../../src/domain/commands.ts'
import { serveHttp } from '../../src/cli/serve.ts'
import { addOperation, bodyJson, createHttpPipeline, json } from '../../src/http/pipeline.ts'
import type { RouteHandler } from '../../src/http/pipeline.ts'
import { createInstance } from '../../src/http/oms-contract.ts'
import { createRouter } from '../../src/http/router.ts'

const kind = process.argv[2]
const token = process.env.BENCH_TOKEN ?? ''
const expected = createHash('sha256').update(token).digest()
const authorized = (header: string | undefined): boolean => {
  const m = header === undefined ? null : /^Bearer\s+(\S{1,4096})\s*$/i.exec(header)
  return (
    m !== null &&
    timingSafeEqual(
      createHash('sha256')
        .update(m[1] as string)
        .digest(),
      expected,
    )
  )
}

/** What every server answers: a command's 202 (nothing stored). */
const accepted = (db: string, classId: string, id: string) => {
  const commandId = randomUUID()
  return {
    command_id: commandId,
    status: 'PENDING',
    status_url: `/api/v1/commands/${commandId}`,
    aggregate_type: 'Instance',
    aggregate_id: `${db}:${classId}:${id}`,
    sequence_number: 1,
  }
}

const listening = (port: number) => process.stdout.write(`listening ${port}\n`)

if (kind === 'node') {
  // node:http and JSON.parse, the body checked by hand for the fields the route needs.
  const ROUTE = /^\/api\/v1\/databases\/([^/]+)\/classes\/([^/]+)\/instances$/
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const send = (status: number, body: unknown) => {
        const text = JSON.stringify(body)
        res.writeHead(status, { 'content-type': 'application/json' }).end(text)
      }
      const m = req.method === 'POST' ? ROUTE.exec(req.url ?? '') : null
      if (m === null) return send(404, { code: 'not_found' })
      if (!authorized(req.headers.authorization)) return send(401, { code: 'unauthorized' })
      let body: { id?: unknown; data?: unknown }
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof body
      } catch {
        return send(400, { code: 'malformed_json' })
      }
      if (typeof body.id !== 'string' || typeof body.data !== 'object' || body.data === null) {
        return send(400, { code: 'validation_failed' })
      }
      return send(202, accepted(m[1] as string, m[2] as string, body.id))
    })
  })
  server.listen(0, '127.0.0.1', () => listening((server.address() as { port: number }).port))
  process.on('SIGTERM', () => server.close(() => process.exit(0)))
} else if (kind === 'fastify') {
  // Fastify with the same JSON Schemas (TypeBox's are JSON Schema), validated by its Ajv.
  const app = Fastify({ logger: false })
  app.addHook('onRequest', async (req, reply) => {
    if (!authorized(req.headers.authorization)) await reply.code(401).send({ code: 'unauthorized' })
  })
  app.post(
    '/api/v1/databases/:db/classes/:class_id/instances',
    {
      schema: {
        params: {
          type: 'object',
          properties: { db: DatabaseName, class_id: ClassId },
          required: ['db', 'class_id'],
        },
        body: CreateInstanceBody,
      },
    },
    async (req, reply) => {
      const p = req.params as { db: string; class_id: string }
      const body = req.body as { id?: string }
      return reply.code(202).send(accepted(p.db, p.class_id, body.id ?? randomUUID()))
    },
  )
  const address = await app.listen({ port: 0, host: '127.0.0.1' })
  listening(Number(new URL(address).port))
  process.on('SIGTERM', () => void app.close().then(() => process.exit(0)))
} else if (kind === 'cairn') {
  // cairn's pipeline and contract, as the OMS serves the route, with the domain's own parser.
  const router = createRouter<RouteHandler>()
  addOperation(router, createInstance, async (ctx) => {
    const body = bodyJson(ctx) as { id?: string }
    const parsed = parseCreateInstance(ctx.params['db'], ctx.params['class_id'], body, randomUUID())
    if (!parsed.ok) return json(400, { code: 'validation_failed' })
    const [db, classId] = [ctx.params['db'] ?? '', ctx.params['class_id'] ?? '']
    return json(202, accepted(db, classId, body.id ?? randomUUID()))
  })
  const app = createHttpPipeline(router, {
    auth: { tokens: [token] },
    openapi: () => ({}),
    component: 'bench',
  })
  const served = await serveHttp(app, '127.0.0.1', 0, silentLogger)
  listening(Number(new URL(served.url).port))
  process.on('SIGTERM', () => void served.close().then(() => process.exit(0)))
} else {
  process.stderr.write(`usage: http-layer-server.ts node|fastify|cairn\n`)
  process.exit(2)
}
