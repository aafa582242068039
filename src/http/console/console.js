// The operator console: four pages over the operator's API, routed by the URL's hash. Every value
// from the server is shown with textContent (event data is user input); nothing is parsed as HTML.
// The token lives in this tab's sessionStorage only: never a cookie (no CSRF), never in a URL.

const TOKEN_KEY = 'cairn.token'
const HISTORY_PAGE = 20
const CHART_SECONDS = 300

/** @type {string | null} */
let token = sessionStorage.getItem(TOKEN_KEY)
/** Aborts the current page's background work (the stream, a poll) when the page changes. */
let pageWork = new AbortController()

// ---- DOM ----

/**
 * An element with attributes and children; strings become text nodes.
 * @param {string} tag
 * @param {Record<string, unknown>} [attrs]
 * @param {...(Node | string | number | null | undefined | false)} children
 */
const h = (tag, attrs = {}, ...children) => {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v)
    else el.setAttribute(k, String(v))
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue
    el.append(typeof c === 'object' ? c : document.createTextNode(String(c)))
  }
  return el
}

const SVG = 'http://www.w3.org/2000/svg'
/** @param {string} tag @param {Record<string, string | number>} attrs */
const s = (tag, attrs) => {
  const el = document.createElementNS(SVG, tag)
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v))
  return el
}

const page = /** @type {HTMLElement} */ (document.getElementById('page'))
const notice = /** @type {HTMLElement} */ (document.getElementById('notice'))
const login = /** @type {HTMLFormElement} */ (document.getElementById('login'))
const who = /** @type {HTMLElement} */ (document.getElementById('who'))

/** @param {string} text @param {'ok' | 'error'} kind */
const say = (text, kind = 'ok') => {
  notice.textContent = text
  notice.className = kind
  notice.hidden = false
}
const unsay = () => {
  notice.hidden = true
  notice.textContent = ''
}

/** A value as text: objects as JSON, missing as an em dash. */
const text = (v) =>
  v === null || v === undefined ? '—' : typeof v === 'object' ? JSON.stringify(v) : String(v)

/**
 * A table of rows.
 * @template T
 * @param {T[]} rows
 * @param {[string, (row: T) => Node | string | number | null | undefined][]} columns
 */
const table = (rows, columns) =>
  h(
    'table',
    {},
    h('thead', {}, h('tr', {}, ...columns.map(([title]) => h('th', {}, title)))),
    h(
      'tbody',
      {},
      ...rows.map((r) =>
        h(
          'tr',
          {},
          ...columns.map(([, cell]) => {
            const v = cell(r)
            return h('td', {}, v instanceof Node ? v : text(v))
          }),
        ),
      ),
    ),
  )

/** A link to another page of the console. */
const link = (hash, label) => h('a', { href: hash }, label)
const historyHash = (type, id, from) =>
  `#/history/${encodeURIComponent(type)}/${encodeURIComponent(id)}${from > 1 ? `?from=${from}` : ''}`
const commandHash = (id) => `#/command/${encodeURIComponent(id)}`

// ---- the API ----

class ApiError extends Error {
  /** @param {number} status @param {Record<string, unknown>} problem */
  constructor(status, problem) {
    super(typeof problem.detail === 'string' ? problem.detail : `HTTP ${status}`)
    this.status = status
    this.problem = problem
  }
}

const headers = () => (token === null ? {} : { authorization: `Bearer ${token}` })

/** A JSON answer of the API; a problem is thrown as ApiError (401 asks for a token). */
const api = async (path, init = {}) => {
  const res = await fetch(path, {
    ...init,
    headers: { accept: 'application/json', ...headers() },
    credentials: 'omit',
    cache: 'no-store',
  })
  const body = await res.json().catch(() => ({}))
  if (res.status === 401) askToken()
  if (!res.ok) throw new ApiError(res.status, body)
  return body
}

const askToken = () => {
  login.hidden = false
  who.textContent = ''
}

const showProblem = (error) => {
  if (error instanceof ApiError) {
    const code = typeof error.problem.code === 'string' ? `${error.problem.code}: ` : ''
    say(`${error.status} ${code}${error.message}`, 'error')
  } else say(String(error), 'error')
}

login.addEventListener('submit', (e) => {
  e.preventDefault()
  const input = /** @type {HTMLInputElement} */ (document.getElementById('token'))
  token = input.value.trim() === '' ? null : input.value.trim()
  input.value = ''
  if (token === null) sessionStorage.removeItem(TOKEN_KEY)
  else sessionStorage.setItem(TOKEN_KEY, token)
  login.hidden = true
  unsay()
  render()
})

const signOut = () => {
  token = null
  sessionStorage.removeItem(TOKEN_KEY)
  askToken()
}

const showWho = () => {
  who.replaceChildren()
  if (token !== null)
    who.append('token set ', h('button', { type: 'button', onclick: signOut }, 'forget'))
}

// ---- pipeline overview (live) ----

/** @type {{ t: number, done: number, lag: number }[]} */
const samples = []

const totalDone = (overview) =>
  Object.values(overview.handlers).reduce((n, c) => n + (c.done ?? 0) + (c.skipped_stale ?? 0), 0)

const addSample = (overview) => {
  const t = Date.parse(overview.at)
  samples.push({ t, done: totalDone(overview), lag: overview.publisher.lag_seconds })
  while (samples.length > 0 && samples[0].t < t - CHART_SECONDS * 1000) samples.shift()
}

/** Throughput (events/s, from the handlers' done counts) and lag over the last minutes. */
const chart = () => {
  const width = 600
  const height = 140
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img' })
  svg.append(s('title', {}))
  svg.firstChild.textContent = `throughput and lag, last ${CHART_SECONDS / 60} minutes`
  const rates = []
  for (let i = 1; i < samples.length; i++) {
    const dt = (samples[i].t - samples[i - 1].t) / 1000
    rates.push({
      t: samples[i].t,
      v: dt > 0 ? Math.max(0, samples[i].done - samples[i - 1].done) / dt : 0,
    })
  }
  const lags = samples.map((p) => ({ t: p.t, v: p.lag }))
  const end = samples.length > 0 ? samples[samples.length - 1].t : Date.now()
  // The span shown grows with the samples, from a minute up to the whole window.
  const span = Math.min(CHART_SECONDS * 1000, Math.max(60_000, end - (samples[0]?.t ?? end)))
  const x = (t) => width - ((end - t) / span) * width
  const line = (points, cls) => {
    const max = Math.max(1, ...points.map((p) => p.v))
    const y = (v) => height - 4 - (v / max) * (height - 20)
    svg.append(
      s('polyline', {
        class: cls,
        points: points.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(' '),
      }),
    )
    return max
  }
  svg.append(s('line', { x1: 0, y1: height - 4, x2: width, y2: height - 4, class: 'axis' }))
  const maxRate = line(rates, 'rate')
  const maxLag = line(lags, 'lag')
  const legend = h(
    'p',
    { class: 'legend' },
    h('span', { class: 'rate' }, `■ throughput (max ${maxRate.toFixed(1)} events/s)`),
    ' ',
    h('span', { class: 'lag' }, `■ publisher lag (max ${maxLag} s)`),
    ` — last ${Math.round(span / 1000)} s, ${samples.length} samples`,
  )
  return h('div', {}, svg, legend)
}

const STATUSES = [
  'done',
  'processing',
  'retrying',
  'failed',
  'parked',
  'skipped',
  'skipped_stale',
  'lease_expired',
]

const overviewView = (o) => {
  const p = o.publisher
  const publisher = table(
    [
      ['active publisher (checkpoint owner)', p.owner],
      ['this process', p.this_process ?? 'no publisher here'],
      ['checkpoint', p.checkpoint],
      ['settled up to', p.settled_up_to],
      ['lag', `${p.lag_seconds} s`],
      ['unpublished segments', `${p.unpublished_segments}${p.unpublished_capped ? '+' : ''}`],
      ['settling', p.settling === false ? `no: ${text(p.not_settling_because)}` : p.settling],
      ['clock offset', p.clock_offset_ms === null ? null : `${p.clock_offset_ms} ms`],
      ['quarantined', p.quarantined],
      ['checkpoint saved', p.updated_at],
    ],
    [
      ['publisher', (r) => r[0]],
      ['', (r) => r[1]],
    ],
  )
  const publishers = table(p.publishers, [
    ['publisher', (r) => r.id],
    ['role', (r) => r.role],
    ['host', (r) => r.host],
    ['position', (r) => r.position ?? '—'],
    ['seen', (r) => `${r.seen_seconds_ago} s ago`],
  ])
  publishers.id = 'publishers'
  const handlers = table(Object.entries(o.handlers), [
    ['handler', ([name]) => name],
    ...STATUSES.map((st) => [
      st === 'processing' ? 'in flight' : st.replace('_', ' '),
      ([, c]) => c[st] ?? 0,
    ]),
  ])
  handlers.id = 'handlers'
  const consumers =
    o.consumers === 'unknown'
      ? h('p', {}, 'Consumer lag per topic: unknown (this bus does not tell).')
      : table(o.consumers, [
          ['group', (r) => r.group],
          ['topic', (r) => r.topic],
          ['lag (messages)', (r) => r.lag],
        ])
  return h(
    'div',
    { id: 'overview' },
    h('p', { class: 'muted' }, `as of ${o.at}`),
    chart(),
    h('h2', {}, 'Publisher'),
    publisher,
    publishers,
    h('h2', {}, 'Handlers'),
    handlers,
    h('h2', {}, 'Consumers'),
    consumers,
  )
}

/** Reads server-sent events from a fetch() body (EventSource cannot send Authorization). */
const readEvents = async (res, onEvent, signal) => {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
  let buffer = ''
  signal.addEventListener('abort', () => reader.cancel().catch(() => {}), { once: true })
  for (;;) {
    const { value, done } = await reader.read()
    if (done) return
    buffer += value
    let end
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end)
      buffer = buffer.slice(end + 2)
      let event = 'message'
      let data = ''
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) event = line.slice(7)
        else if (line.startsWith('data: ')) data += line.slice(6)
      }
      if (data !== '') onEvent(event, JSON.parse(data))
    }
  }
}

const overviewPage = async (_params, signal) => {
  const live = h('span', { class: 'live', id: 'live' }, 'connecting…')
  const body = h('div', {})
  page.replaceChildren(h('h1', {}, 'Pipeline ', live), body)
  const onEvent = (event, data) => {
    if (event === 'overview') {
      addSample(data)
      body.replaceChildren(overviewView(data))
      live.textContent = 'live'
      live.className = 'live on'
    } else if (event === 'unavailable') {
      live.textContent = `unavailable: ${data.detail}`
      live.className = 'live off'
    }
  }
  // Reconnects while the page is shown: the server ends each stream after a while.
  while (!signal.aborted) {
    try {
      const res = await fetch('/api/v1/ops/stream', {
        headers: { accept: 'text/event-stream', ...headers() },
        credentials: 'omit',
        cache: 'no-store',
        signal,
      })
      if (res.status === 401) askToken()
      if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => ({})))
      await readEvents(res, onEvent, signal)
    } catch (error) {
      if (signal.aborted) return
      live.textContent = 'disconnected'
      live.className = 'live off'
      if (error instanceof ApiError) {
        showProblem(error)
        return
      }
    }
    await new Promise((r) => setTimeout(r, 2000))
  }
}

// ---- parked and dead-lettered ----

const parkedPage = async () => {
  const { items } = await api('/api/v1/ops/parked')
  const act = (verb, r) => async () => {
    try {
      const after = await api(
        `/api/v1/ops/parked/${encodeURIComponent(r.handler)}/${encodeURIComponent(r.event_id)}/${verb}`,
        { method: 'POST' },
      )
      say(
        `${verb === 'retry' ? 'retried' : 'skipped'} ${after.event_id} for ${after.handler}: now ${after.status}, by ${after.resolved_by} at ${after.resolved_at}`,
      )
      await parkedPage()
    } catch (error) {
      showProblem(error)
    }
  }
  page.replaceChildren(
    h('h1', {}, 'Parked and dead-lettered'),
    items.length === 0
      ? h('p', { id: 'parked-empty' }, 'Nothing is failed or parked.')
      : table(items, [
          ['handler', (r) => r.handler],
          ['event', (r) => link(commandHash(r.event_id), r.event_id)],
          [
            'aggregate',
            (r) =>
              link(
                historyHash(r.aggregate_type, r.aggregate_id, 1),
                `${r.aggregate_type}/${r.aggregate_id}`,
              ),
          ],
          ['seq', (r) => r.sequence_number],
          ['status', (r) => r.status],
          ['attempts', (r) => r.attempts],
          ['reason', (r) => h('span', { class: 'reason' }, text(r.last_error))],
          ['since', (r) => r.updated_at],
          [
            '',
            (r) =>
              h(
                'span',
                { class: 'actions' },
                h(
                  'button',
                  {
                    type: 'button',
                    'data-action': 'retry',
                    'data-event': r.event_id,
                    onclick: act('retry', r),
                  },
                  'Retry',
                ),
                h(
                  'button',
                  {
                    type: 'button',
                    'data-action': 'skip',
                    'data-event': r.event_id,
                    onclick: act('skip', r),
                  },
                  'Skip',
                ),
              ),
          ],
        ]),
  )
}

// ---- an aggregate's history ----

const envelopeView = (e) =>
  h(
    'details',
    { class: 'envelope' },
    h(
      'summary',
      {},
      `#${e.sequence_number} ${e.event_type} — ${e.metadata?.kind ?? ''} at ${e.occurred_at} by ${text(e.actor)}`,
    ),
    h('pre', {}, JSON.stringify(e, null, 2)),
  )

const historyPage = async (params) => {
  const [type = '', id = ''] = params.path
  const from = Math.max(1, Number(params.query.get('from') ?? '1') || 1)
  const form = h(
    'form',
    { class: 'find', id: 'history-form' },
    h('label', {}, 'Aggregate type ', h('input', { name: 'type', value: type, required: true })),
    h('label', {}, 'id ', h('input', { name: 'id', value: id, required: true })),
    h('button', { type: 'submit' }, 'Show'),
  )
  form.addEventListener('submit', (e) => {
    e.preventDefault()
    const data = new FormData(form)
    location.hash = historyHash(String(data.get('type')), String(data.get('id')), 1)
  })
  page.replaceChildren(h('h1', {}, 'Aggregate history'), form)
  if (type === '' || id === '') return
  const got = await api(
    `/api/v1/aggregates/${encodeURIComponent(type)}/${encodeURIComponent(id)}/events?from_seq=${from}&limit=${HISTORY_PAGE}`,
  )
  const nav = h(
    'p',
    { class: 'pager' },
    from > 1 ? link(historyHash(type, id, Math.max(1, from - HISTORY_PAGE)), '← earlier') : '',
    ' ',
    got.next_from_seq === null ? '' : link(historyHash(type, id, got.next_from_seq), 'later →'),
  )
  page.append(
    h('h2', {}, `${type}/${id}, from #${from}`),
    h('div', { id: 'events' }, ...got.events.map(envelopeView)),
    nav,
  )
}

// ---- one command's path ----

const recordsTable = (records) =>
  records.length === 0
    ? h('p', { class: 'muted' }, 'no handler has a record of it yet')
    : table(records, [
        ['handler', (r) => r.handler],
        ['status', (r) => h('span', { class: `st-${r.status}` }, r.status)],
        ['attempts', (r) => r.attempts],
        ['at', (r) => r.updated_at],
        ['error', (r) => r.last_error],
        [
          'by hand',
          (r) => (r.resolved_by === null ? null : `${r.resolved_by} at ${r.resolved_at}`),
        ],
      ])

const TERMINAL = new Set(['COMPLETED', 'FAILED'])

const commandPage = async (params, signal) => {
  const [id = ''] = params.path
  const form = h(
    'form',
    { class: 'find', id: 'command-form' },
    h('label', {}, 'Command id ', h('input', { name: 'id', value: id, required: true, size: 40 })),
    h('button', { type: 'submit' }, 'Follow'),
  )
  form.addEventListener('submit', (e) => {
    e.preventDefault()
    location.hash = commandHash(String(new FormData(form).get('id')).trim())
  })
  const body = h('div', { id: 'command' })
  page.replaceChildren(h('h1', {}, 'Command'), form, body)
  if (id === '') return
  // Followed until it is terminal and its events are processed, while the page is shown.
  while (!signal.aborted) {
    const got = await api(`/api/v1/ops/commands/${encodeURIComponent(id)}`)
    const st = got.status
    body.replaceChildren(
      h(
        'p',
        { class: 'status' },
        'Status ',
        h('strong', { id: 'command-status', class: `st-${st.status}` }, st.status),
        ` — ${text(st.command_type)} on `,
        link(
          historyHash(st.aggregate_type, st.aggregate_id, 1),
          `${st.aggregate_type}/${st.aggregate_id}`,
        ),
        ` #${st.sequence_number}, submitted ${st.submitted_at}`,
        st.error === undefined ? '' : ` — ${st.error.code}: ${st.error.message}`,
        st.detail === undefined ? '' : ` — ${st.detail}`,
      ),
      h('h2', {}, 'The command'),
      envelopeView(got.command),
      h('h3', {}, 'Handlers of the command'),
      recordsTable(got.records),
      h('h2', {}, `Its events (${got.events.length})`),
      ...got.events.map((e) =>
        h(
          'section',
          { class: 'event' },
          e.envelope === null
            ? h('p', {}, `${e.event_id} (not in the bucket yet)`)
            : envelopeView(e.envelope),
          recordsTable(e.records),
        ),
      ),
    )
    const open = new Set(['processing', 'retrying'])
    const settled = got.events.every(
      (e) => e.records.length > 0 && e.records.every((r) => !open.has(r.status)),
    )
    if (TERMINAL.has(st.status) && settled) return
    await new Promise((r) => setTimeout(r, 1000))
  }
}

// ---- routing ----

const PAGES = {
  overview: overviewPage,
  parked: parkedPage,
  history: historyPage,
  command: commandPage,
}

const render = () => {
  pageWork.abort()
  pageWork = new AbortController()
  const signal = pageWork.signal
  const hash = location.hash.replace(/^#\/?/, '')
  const q = hash.indexOf('?')
  const parts = (q < 0 ? hash : hash.slice(0, q)).split('/').filter((p) => p !== '')
  const query = new URLSearchParams(q < 0 ? '' : hash.slice(q + 1))
  const name = parts[0] in PAGES ? parts[0] : 'overview'
  const path = parts.slice(1).map((p) => {
    try {
      return decodeURIComponent(p)
    } catch {
      return p
    }
  })
  for (const a of document.querySelectorAll('nav a')) {
    a.classList.toggle('current', a.getAttribute('data-page') === name)
  }
  showWho()
  unsay()
  document.body.setAttribute('data-page', name)
  PAGES[name]({ path, query }, signal).catch((error) => {
    if (!signal.aborted) showProblem(error)
  })
}

window.addEventListener('hashchange', render)
render()
