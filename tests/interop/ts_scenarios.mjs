// Interop scenarios: super-line's own TypeScript client against a superline.v1 server.
//
// Usage:  node tests/interop/ts_scenarios.mjs ws://127.0.0.1:PORT/ [scenario ...]
//
// The client bundle is found through $SUPERLINE_INTEROP_CLIENT (set by
// tests/test_interop_ts.py to <repo>/../shared/interop/superline-client.mjs); without it,
// the same path is computed relative to this file.
//
// Every scenario prints exactly one JSON line on stdout:
//   {"scenario": "<name>", "ok": true,  "result": {...observed values...}}
//   {"scenario": "<name>", "ok": false, "error": "<what went wrong>", "result": {...partial...}}
// Nothing else is written to stdout (diagnostics go to stderr). The process exits 0 only if
// every selected scenario passed its own checks; 1 if any failed; 2 on a usage / setup
// error; 3 if the global deadline expired. Every wait is bounded.
//
// The contract mirrors tests/interop/app.py; keep the two in step.

import { existsSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const SCENARIO_TIMEOUT_MS = 15000 // whole scenario
const CALL_TIMEOUT_MS = 5000 // one request / ready / event wait
const GLOBAL_DEADLINE_MS = 50000
const TOKEN = 'interop-token' // must match app.py

function die(code, msg) {
  process.stderr.write(`ts_scenarios: ${msg}\n`)
  process.exit(code)
}

const here = dirname(fileURLToPath(import.meta.url))
const bundlePath = process.env.SUPERLINE_INTEROP_CLIENT || resolve(here, '../../../shared/interop/superline-client.mjs')
if (!existsSync(bundlePath)) die(2, `client bundle not found at ${bundlePath} (set SUPERLINE_INTEROP_CLIENT)`)
const { createSuperLineClient, defineContract, SuperLineError, webSocketClientTransport, WebSocket, z } = await import(
  pathToFileURL(bundlePath).href
)

const [url, ...selected] = process.argv.slice(2)
if (!url || !/^wss?:\/\//.test(url)) die(2, 'usage: node ts_scenarios.mjs ws://HOST:PORT/ [scenario ...]')

// ---------------------------------------------------------------- contract (= app.py)

const Text = z.object({ text: z.string() })
const Ok = z.object({ ok: z.boolean() })
const Tick = z.object({ n: z.int() })

const api = defineContract({
  shared: {
    clientToServer: {
      echo: { input: Text, output: Text },
      fail: { input: Text, output: Text }, // always raises SocketError("NOPE", ..., data)
      boom: { input: Text, output: Text }, // always raises a plain exception -> INTERNAL
      poke: { input: Text, output: Ok }, // emits `notice` to the caller, then answers
      tick: { input: Tick, output: Ok }, // srv.publish("ticks", Tick(n))
      ask: { input: Text, output: Ok }, // awaits conn.request("confirm", ...), returns the answer
    },
    serverToClient: {
      notice: { payload: Text },
      ticks: { payload: Tick, subscribe: true },
      secret: { payload: Tick, subscribe: true }, // authorize_subscribe denies it
      confirm: { input: z.object({ q: z.string() }), output: Ok },
    },
  },
  roles: {
    user: { clientToServer: { whoami: { input: z.object({}).optional(), output: Text } } },
    agent: { clientToServer: { report: { input: Text, output: Ok } } },
  },
})

// ---------------------------------------------------------------- helpers

class CheckFailed extends Error {}

function check(cond, msg, got) {
  if (!cond) throw new CheckFailed(got === undefined ? msg : `${msg}; got ${JSON.stringify(got)}`)
}

function within(ms, label, promise) {
  let timer
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new CheckFailed(`timed out after ${ms} ms waiting for ${label}`)), ms)
  })
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer))
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

// Settle a call: {ok:true, value} or {ok:false, code, message, data, has_data}.
async function settle(label, promise) {
  try {
    return { ok: true, value: await within(CALL_TIMEOUT_MS + 1000, label, promise) }
  } catch (e) {
    if (e instanceof SuperLineError)
      return { ok: false, code: e.code, message: e.message, has_data: e.data !== undefined, data: e.data ?? null }
    throw e
  }
}

function expectValue(out, label) {
  check(out.ok, `${label} should succeed`, out)
  return out.value
}

function expectError(out, code, label) {
  check(!out.ok, `${label} should fail with ${code}`, out)
  check(out.code === code, `${label}: expected code ${code}`, out)
  return out
}

// A `ws` WebSocket that records every raw frame in both directions, the dialled URL and
// the handshake's response headers.
function recordingWebSocket(rec) {
  return class RecordingWebSocket extends WebSocket {
    constructor(address, ...rest) {
      super(address, ...rest)
      rec.urls.push(String(address))
      this.on('upgrade', (res) => {
        rec.upgrades.push({ status: res.statusCode, protocol: res.headers['sec-websocket-protocol'] ?? null })
      })
      this.on('error', (e) => rec.errors.push(String(e?.message ?? e)))
      this.on('message', (data, isBinary) => {
        const text = Buffer.from(data instanceof ArrayBuffer ? new Uint8Array(data) : data).toString('utf8')
        rec.frames.push({ dir: 'in', binary: isBinary, raw: text })
      })
    }
    send(data, ...rest) {
      rec.frames.push({ dir: 'out', binary: typeof data !== 'string', raw: typeof data === 'string' ? data : Buffer.from(data).toString('utf8') })
      return super.send(data, ...rest)
    }
  }
}

const openClients = new Set()

function open({ role = 'user', token = TOKEN, params = {}, reconnect, onDisconnect } = {}) {
  const rec = { urls: [], upgrades: [], errors: [], frames: [], validationErrors: [], disconnects: [] }
  const client = createSuperLineClient(api, {
    transport: webSocketClientTransport({ url, WebSocket: recordingWebSocket(rec) }),
    role,
    params: { token, ...params },
    timeoutMs: CALL_TIMEOUT_MS,
    validate: 'inbound',
    reconnect,
    onDisconnect: (code) => {
      rec.disconnects.push(code)
      onDisconnect?.(code)
    },
    onValidationError: (err, info) => {
      rec.validationErrors.push({ ...info, message: err?.message ?? String(err), issues: err?.data ?? null })
    },
  })
  openClients.add(client)
  return { client, rec }
}

function closeClient(client) {
  openClients.delete(client)
  try {
    client.close()
  } catch {}
}

// Collects values pushed to a callback and lets a scenario wait for one.
function collector() {
  const items = []
  const waiters = []
  return {
    items,
    push(v) {
      items.push(v)
      for (const w of [...waiters]) if (w.pred(v)) (waiters.splice(waiters.indexOf(w), 1), w.resolve(v))
    },
    waitFor(label, pred = () => true, ms = CALL_TIMEOUT_MS) {
      const found = items.find(pred)
      if (found !== undefined) return Promise.resolve(found)
      return within(ms, label, new Promise((resolve) => waiters.push({ pred, resolve })))
    },
  }
}

async function ready(client, rec) {
  await within(CALL_TIMEOUT_MS, 'the initial env frame', client.env.ready)
  check(rec.validationErrors.length === 0, 'inbound validation errors', rec.validationErrors)
}

function parsedFrames(rec, dir) {
  const out = []
  for (const f of rec.frames) {
    if (f.dir !== dir) continue
    let obj
    try {
      obj = JSON.parse(f.raw)
    } catch {
      obj = { undecodable: f.raw }
    }
    out.push({ binary: f.binary, frame: obj })
  }
  return out
}

// ---------------------------------------------------------------- scenarios

const scenarios = {
  // Handshake + first frame: the env frame arrives, the query carries token and role.
  async env() {
    const { client, rec } = open()
    try {
      await ready(client, rec)
      const dialled = new URL(rec.urls[0])
      const first = parsedFrames(rec, 'in')[0]
      return {
        env: client.env.current ?? null,
        connected: client.connected,
        query: Object.fromEntries(dialled.searchParams),
        upgrade: rec.upgrades[0] ?? null,
        first_frame: first?.frame ?? null,
      }
    } finally {
      closeClient(client)
    }
  },

  async echo() {
    const { client, rec } = open()
    try {
      await ready(client, rec)
      const text = 'héllo, wörld ✓ 🚀'
      const reply = expectValue(await settle('echo', client.echo({ text })), 'echo')
      check(reply.text === text, 'echo returned a different text', reply)
      // Concurrent calls: replies correlate by `i` whatever their order.
      const many = await Promise.all(
        Array.from({ length: 20 }, (_, k) => settle(`echo #${k}`, client.echo({ text: `m${k}` }))),
      )
      const texts = many.map((o) => expectValue(o, 'concurrent echo').text)
      check(texts.every((t, k) => t === `m${k}`), 'concurrent echo replies mismatched', texts)
      check(rec.validationErrors.length === 0, 'inbound validation errors', rec.validationErrors)
      return { reply, concurrent: texts }
    } finally {
      closeClient(client)
    }
  },

  // Request with no input: the `req` frame carries no `d` at all (JS undefined is dropped).
  async whoami() {
    const { client, rec } = open({ params: { user: 'alice' } })
    try {
      await ready(client, rec)
      const reply = expectValue(await settle('whoami', client.whoami()), 'whoami')
      const sent = parsedFrames(rec, 'out').find((f) => f.frame.t === 'req' && f.frame.m === 'whoami')
      return { reply, sent_frame: sent?.frame ?? null }
    } finally {
      closeClient(client)
    }
  },

  async typed_error() {
    const { client, rec } = open()
    try {
      await ready(client, rec)
      const out = expectError(await settle('fail', client.fail({ text: 'abc' })), 'NOPE', 'fail')
      const raw = parsedFrames(rec, 'in').find((f) => f.frame.t === 'err')
      return { error: out, raw_frame: raw?.frame ?? null }
    } finally {
      closeClient(client)
    }
  },

  async internal() {
    const { client, rec } = open()
    try {
      await ready(client, rec)
      const out = expectError(await settle('boom', client.boom({ text: 'x' })), 'INTERNAL', 'boom')
      const raw = parsedFrames(rec, 'in').find((f) => f.frame.t === 'err')
      check(!JSON.stringify(raw?.frame ?? {}).includes('kaboom'), 'INTERNAL error leaks the exception text', raw)
      // The connection survives a handler crash.
      const after = expectValue(await settle('echo after boom', client.echo({ text: 'still here' })), 'echo')
      return { error: out, raw_frame: raw?.frame ?? null, after }
    } finally {
      closeClient(client)
    }
  },

  // Bad input reaches the server: the TS client does not validate outbound input.
  async validation() {
    const { client, rec } = open()
    try {
      await ready(client, rec)
      const badType = expectError(await settle('echo({text:123})', client.echo({ text: 123 })), 'VALIDATION', 'echo bad type')
      const missing = expectError(await settle('echo()', client.echo()), 'VALIDATION', 'echo without input')
      const wrongShape = expectError(await settle('tick({n:1.5})', client.tick({ n: 1.5 })), 'VALIDATION', 'tick non-int')
      const after = expectValue(await settle('echo after', client.echo({ text: 'ok' })), 'echo')
      return { bad_type: badType, missing, wrong_shape: wrongShape, after }
    } finally {
      closeClient(client)
    }
  },

  // Role scoping: cross-role and unknown names are NOT_FOUND, before validation.
  async not_found() {
    const { client, rec } = open({ role: 'user' })
    try {
      await ready(client, rec)
      const crossRole = expectError(await settle('report', client.report({ text: 'x' })), 'NOT_FOUND', 'user->report')
      const crossRoleBad = expectError(await settle('report(bad)', client.report({ text: 1 })), 'NOT_FOUND', 'user->report(bad input)')
      const unknown = expectError(await settle('nosuch', client.nosuch({ a: 1 })), 'NOT_FOUND', 'nosuch')
      const sub = client.subscribe('nosuchtopic', () => {})
      const unknownTopic = expectError(await settle('subscribe nosuchtopic', sub.ready), 'NOT_FOUND', 'sub nosuchtopic')
      return { cross_role: crossRole, cross_role_bad_input: crossRoleBad, unknown, unknown_topic: unknownTopic }
    } finally {
      closeClient(client)
    }
  },

  async agent() {
    const { client, rec } = open({ role: 'agent' })
    try {
      await ready(client, rec)
      const report = expectValue(await settle('report', client.report({ text: 'r1' })), 'agent report')
      const whoami = expectError(await settle('whoami', client.whoami()), 'NOT_FOUND', 'agent->whoami')
      const echo = expectValue(await settle('echo', client.echo({ text: 'shared' })), 'agent echo')
      return { report, whoami, echo }
    } finally {
      closeClient(client)
    }
  },

  // Events: one pushed from on_connection, one pushed by a request handler.
  async event() {
    const { client, rec } = open()
    const notices = collector()
    client.on('notice', (d) => notices.push(d))
    try {
      await ready(client, rec)
      const welcome = await notices.waitFor('the welcome notice', (d) => d.text.startsWith('welcome'))
      const reply = expectValue(await settle('poke', client.poke({ text: 'hey' })), 'poke')
      const poked = await notices.waitFor('the poke notice', (d) => d.text === 'poked:hey')
      check(rec.validationErrors.length === 0, 'inbound validation errors', rec.validationErrors)
      return { welcome, poked, reply, all: notices.items }
    } finally {
      closeClient(client)
    }
  },

  // Topics: subscribe, server publishes, unsubscribe stops delivery.
  async topic() {
    const { client, rec } = open()
    const ticks = collector()
    try {
      await ready(client, rec)
      const sub = client.subscribe('ticks', (d) => ticks.push(d))
      const ack = await settle('ticks ready', sub.ready)
      check(ack.ok, 'subscribe ticks should be acked', ack)
      const reply = expectValue(await settle('tick 5', client.tick({ n: 5 })), 'tick 5')
      const got = await ticks.waitFor('pub ticks n=5', (d) => d.n === 5)
      const subFrame = parsedFrames(rec, 'out').find((f) => f.frame.t === 'sub')?.frame ?? null
      const ackFrame = subFrame && parsedFrames(rec, 'in').find((f) => f.frame.t === 'res' && f.frame.i === subFrame.i)?.frame
      const pubFrame = parsedFrames(rec, 'in').find((f) => f.frame.t === 'pub')?.frame ?? null
      sub.unsubscribe()
      await sleep(100)
      expectValue(await settle('tick 6', client.tick({ n: 6 })), 'tick 6')
      await sleep(300)
      const afterUnsub = ticks.items.filter((d) => d.n === 6)
      check(afterUnsub.length === 0, 'a pub arrived after unsubscribe', afterUnsub)
      check(rec.validationErrors.length === 0, 'inbound validation errors', rec.validationErrors)
      return { reply, received: got, all: ticks.items, sub_frame: subFrame, ack_frame: ackFrame ?? null, pub_frame: pubFrame }
    } finally {
      closeClient(client)
    }
  },

  // authorize_subscribe denies `secret`: ready rejects FORBIDDEN; the connection lives on.
  async forbidden() {
    const { client, rec } = open()
    try {
      await ready(client, rec)
      const sub = client.subscribe('secret', () => {})
      const denied = expectError(await settle('secret ready', sub.ready), 'FORBIDDEN', 'subscribe secret')
      const after = expectValue(await settle('echo after', client.echo({ text: 'alive' })), 'echo')
      return { denied, after }
    } finally {
      closeClient(client)
    }
  },

  // Server -> client requests (sreq / sres / serr).
  async server_request() {
    const { client, rec } = open()
    const asked = []
    client.implement({
      confirm: async ({ q }) => {
        asked.push(q)
        if (q === 'decline') throw new SuperLineError('DECLINED', 'not now', { why: 'test' })
        if (q === 'bad') return { ok: 'yes' } // fails the server's output validation
        if (q === 'crash') throw new Error('client-side crash')
        return { ok: q === 'ready?' }
      },
    })
    try {
      await ready(client, rec)
      const answer = expectValue(await settle('ask go', client.ask({ text: 'go' })), 'ask go')
      check(answer.ok === true, 'ask go: expected {ok:true}', answer)
      const declined = expectError(await settle('ask decline', client.ask({ text: 'decline' })), 'DECLINED', 'ask decline')
      const badOutput = expectError(await settle('ask bad', client.ask({ text: 'bad' })), 'VALIDATION', 'ask bad')
      const crash = expectError(await settle('ask crash', client.ask({ text: 'crash' })), 'INTERNAL', 'ask crash')
      const sreq = parsedFrames(rec, 'in').find((f) => f.frame.t === 'sreq')?.frame ?? null
      const answers = parsedFrames(rec, 'out')
        .filter((f) => f.frame.t === 'sres' || f.frame.t === 'serr')
        .map((f) => f.frame)
      return { answer, asked, declined, bad_output: badOutput, crash, sreq_frame: sreq, answer_frames: answers }
    } finally {
      closeClient(client)
    }
  },

  // A client with no `confirm` handler answers serr NOT_FOUND.
  async server_request_unhandled() {
    const { client, rec } = open()
    try {
      await ready(client, rec)
      const out = expectError(await settle('ask without handler', client.ask({ text: 'go' })), 'NOT_FOUND', 'ask')
      const serr = parsedFrames(rec, 'out').find((f) => f.frame.t === 'serr')?.frame ?? null
      return { error: out, serr_frame: serr }
    } finally {
      closeClient(client)
    }
  },

  // authenticate refuses a bad token: HTTP 401 before the upgrade, seen by the client as 1006.
  async auth_rejected() {
    const closed = collector()
    const { client, rec } = open({ token: 'wrong', reconnect: false, onDisconnect: (c) => closed.push(c) })
    // Queued while connecting; rejected DISCONNECTED when the refused connection closes.
    const pending = settle('echo queued before refusal', client.echo({ text: 'x' }))
    try {
      const code = await closed.waitFor('the disconnect of a refused client')
      const call = expectError(await pending, 'DISCONNECTED', 'queued echo')
      const envReady = await Promise.race([client.env.ready.then(() => true), sleep(200).then(() => false)])
      check(!envReady, 'a refused client got an env frame')
      return { close_code: code, upgrade: rec.upgrades[0] ?? null, ws_errors: rec.errors, frames: rec.frames.length, call }
    } finally {
      closeClient(client)
    }
  },

  // Heartbeat (§7): run against a server with a short ping interval and reaping on; the
  // client answers every ping with a pong and so stays connected.
  async heartbeat() {
    const { client, rec } = open()
    try {
      await ready(client, rec)
      await sleep(1200)
      const pings = parsedFrames(rec, 'in').filter((f) => f.frame.t === 'ping')
      const pongs = parsedFrames(rec, 'out').filter((f) => f.frame.t === 'pong')
      check(client.connected, 'the client was dropped despite answering pings', rec.disconnects)
      const after = expectValue(await settle('echo after pings', client.echo({ text: 'beat' })), 'echo')
      return {
        pings: pings.length,
        pongs: pongs.length,
        ping_frame: pings[0]?.frame ?? null,
        pong_frame: pongs[0]?.frame ?? null,
        disconnects: rec.disconnects,
        after,
      }
    } finally {
      closeClient(client)
    }
  },

  // Raw frame shapes across every frame kind the server sends (see PROTOCOL.md §3).
  async frames() {
    const { client, rec } = open()
    client.implement({ confirm: async ({ q }) => ({ ok: q === 'ready?' }) })
    const ticks = collector()
    const notices = collector()
    client.on('notice', (d) => notices.push(d))
    try {
      await ready(client, rec)
      expectValue(await settle('echo', client.echo({ text: 'f' })), 'echo')
      expectError(await settle('fail', client.fail({ text: 'f' })), 'NOPE', 'fail')
      expectError(await settle('boom', client.boom({ text: 'f' })), 'INTERNAL', 'boom')
      expectError(await settle('nosuch', client.nosuch({})), 'NOT_FOUND', 'nosuch')
      expectValue(await settle('poke', client.poke({ text: 'f' })), 'poke')
      await notices.waitFor('poke notice', (d) => d.text === 'poked:f')
      const sub = client.subscribe('ticks', (d) => ticks.push(d))
      check((await settle('ticks ready', sub.ready)).ok, 'subscribe ticks failed')
      expectValue(await settle('tick', client.tick({ n: 42 })), 'tick')
      await ticks.waitFor('pub 42', (d) => d.n === 42)
      expectValue(await settle('ask', client.ask({ text: 'go' })), 'ask')
      check(rec.validationErrors.length === 0, 'inbound validation errors', rec.validationErrors)
      return { inbound: parsedFrames(rec, 'in'), outbound: parsedFrames(rec, 'out') }
    } finally {
      closeClient(client)
    }
  },
}

// ---------------------------------------------------------------- runner

const names = selected.length ? selected : Object.keys(scenarios)
for (const n of names) if (!(n in scenarios)) die(2, `unknown scenario ${JSON.stringify(n)}; known: ${Object.keys(scenarios).join(', ')}`)

const deadline = setTimeout(() => {
  for (const c of openClients) closeClient(c)
  die(3, `global deadline of ${GLOBAL_DEADLINE_MS} ms expired`)
}, GLOBAL_DEADLINE_MS)

let failures = 0
for (const name of names) {
  let line
  try {
    const result = await within(SCENARIO_TIMEOUT_MS, `scenario ${name}`, scenarios[name]())
    line = { scenario: name, ok: true, result }
  } catch (e) {
    failures++
    const error = e instanceof CheckFailed ? e.message : `${e?.name ?? 'Error'}: ${e?.message ?? e}`
    line = { scenario: name, ok: false, error }
    process.stderr.write(`ts_scenarios: scenario ${name} FAILED: ${error}\n`)
  }
  process.stdout.write(JSON.stringify(line) + '\n')
}
clearTimeout(deadline)
for (const c of openClients) closeClient(c)
process.stdout.write('', () => process.exit(failures ? 1 : 0))
