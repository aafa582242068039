import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { HANDLERS, TOPICS } from '../../src/domain/model.ts'
import { startCairn } from '../support/cairn-process.ts'
import type { CairnProcess } from '../support/cairn-process.ts'
import { DEPLOYMENT_TOKEN, freshDeployment } from '../support/oms-deployment.ts'
import type { Deployment } from '../support/oms-deployment.ts'
import { SPAN_KIND, startOtlpReceiver } from '../support/otlp-receiver.ts'
import type { OtlpReceiver, ReceivedSpan } from '../support/otlp-receiver.ts'

const TRACE = '5ce0e9a56015fec5aadfa328ae398115'
const CLIENT_SPAN = 'a3ce929d0e0e4736'

let receiver: OtlpReceiver
let deployment: Deployment | undefined
const processes: CairnProcess[] = []
before(async () => {
  receiver = await startOtlpReceiver()
})
after(async () => {
  await Promise.all(processes.map((p) => p.stop('SIGKILL')))
  await deployment?.cleanup()
  await receiver.close()
})

test('one command is one trace across the OMS, the publisher and the workers, through Kafka', async () => {
  deployment = freshDeployment('trace', { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url })
  const env = deployment.env
  const prefix = env.CAIRN_KAFKA_TOPIC_PREFIX as string
  processes.push(
    ...(await Promise.all([
      startCairn(['oms'], env),
      startCairn(['publisher'], env),
      startCairn(['worker', 'ontology', 'instance'], { ...env, CAIRN_MEMBER_NAME: 'commands-1' }),
      startCairn(['worker', 'projection'], { ...env, CAIRN_MEMBER_NAME: 'projection-1' }),
    ])),
  )
  const oms = processes[0] as CairnProcess
  const response = await fetch(`${oms.url}/api/v1/databases`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${DEPLOYMENT_TOKEN}`,
      'content-type': 'application/json',
      traceparent: `00-${TRACE}-${CLIENT_SPAN}-01`,
      prefer: 'wait=30',
    },
    body: JSON.stringify({ name: 'traced' }),
  })
  const body = (await response.json()) as { status?: unknown }
  assert.equal(response.status, 200, JSON.stringify(body))
  assert.equal(body.status, 'COMPLETED')
  // A clean stop exports what each process has left.
  const codes = await Promise.all(processes.map((p) => p.stop('SIGTERM')))
  assert.deepEqual(codes, [0, 0, 0, 0])

  const spans = receiver.spans.filter((s) => s.traceId === TRACE)
  // Whatever else the processes traced (nothing, here), this command's spans are these.
  assert.equal(spans.length, receiver.spans.length, 'no span outside the trace')
  const byId = new Map(spans.map((s) => [s.spanId, s]))
  const parentOf = (s: ReceivedSpan): ReceivedSpan | undefined => byId.get(s.parentSpanId)
  const one = (what: string, pick: (s: ReceivedSpan) => boolean): ReceivedSpan => {
    const found = spans.filter(pick)
    assert.equal(found.length, 1, `${what}: ${found.map((s) => s.name).join(', ') || 'none'}`)
    return found[0] as ReceivedSpan
  }

  const request = one('request', (s) => s.kind === SPAN_KIND.server)
  assert.equal(request.parentSpanId, CLIENT_SPAN)
  assert.equal(request.service, 'cairn-oms')
  one('command append', (s) => s.name === 'cairn.append' && parentOf(s) === request)
  const commandSend = one(
    'command publication',
    (s) => s.kind === SPAN_KIND.producer && parentOf(s) === request,
  )
  assert.equal(commandSend.service, 'cairn-publisher')
  assert.equal(commandSend.attributes['messaging.system'], 'kafka')
  assert.equal(
    commandSend.attributes['messaging.destination.name'],
    prefix + TOPICS.databaseCommands,
  )
  const commandProcess = one(
    'command consumption',
    (s) => s.kind === SPAN_KIND.consumer && parentOf(s) === commandSend,
  )
  assert.equal(commandProcess.service, 'cairn-worker')
  assert.equal(commandProcess.attributes['cairn.handler'], HANDLERS.ontology)
  one('command claim', (s) => s.name === 'cairn.claim' && parentOf(s) === commandProcess)
  const handle = one(
    'command handler',
    (s) => s.name === 'cairn.handle' && parentOf(s) === commandProcess,
  )
  one('event append', (s) => s.name === 'cairn.append' && parentOf(s) === handle)
  const eventSend = one(
    'event publication',
    (s) => s.kind === SPAN_KIND.producer && parentOf(s) === handle,
  )
  const projection = one(
    'projection consumption',
    (s) => s.kind === SPAN_KIND.consumer && parentOf(s) === eventSend,
  )
  assert.equal(projection.service, 'cairn-projection-worker')
  one('projection claim', (s) => s.name === 'cairn.claim' && parentOf(s) === projection)
  one('projection handler', (s) => s.name === 'cairn.handle' && parentOf(s) === projection)
  assert.equal(spans.length, 11, spans.map((s) => `${s.service} ${s.name}`).join(', '))
})
