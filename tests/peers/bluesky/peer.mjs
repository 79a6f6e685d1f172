// A real Bluesky peer for Plaza's tests: PLC + PDS from @atproto/dev-env and a local Jetstream.
//
// Run by deploy/local/bluesky-peer.sh (which installs Node 22 and the pinned node_modules and sets
// PLAZA_BLUESKY_PEER_MODULES). Prints one JSON line on stdout when ready, then runs until SIGTERM:
//   {"plaza_bluesky_peer": "ready", "pds_url", "plc_url", "jetstream_url", "accounts": {...}, ...}
//
// The Jetstream speaks the JSON protocol of Bluesky's Jetstream (/subscribe with wantedCollections,
// wantedDids, cursor, maxMessageSizeBytes, requireHello, and options_update messages), fed from the
// PDS's real firehose (com.atproto.sync.subscribeRepos, commits verified against the repo's key);
// it keeps every event in memory so a cursor in the past replays from there.
//
// Environment: PLAZA_BLUESKY_PEER_MODULES (required), PLAZA_BLUESKY_PEER_DATA (a directory the
// caller owns; default: a new temporary one, removed at exit), PLAZA_BLUESKY_PEER_PLC_PORT,
// PLAZA_BLUESKY_PEER_PDS_PORT, PLAZA_BLUESKY_PEER_JETSTREAM_PORT (default: free ports),
// PLAZA_BLUESKY_PEER_EXIT_ON_STDIN_EOF=1 (stop when stdin closes, i.e. when the caller dies).

import fs from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'

const LOOPBACK = '127.0.0.1'
const CITY = 'ajuntament.test'
const CITIZENS = ['marta.test', 'jordi.test']
const MAX_BUFFERED_EVENTS = 200_000

const log = (msg) => process.stderr.write(`bluesky-peer: ${msg}\n`)

// Every server in this process (PLC, PDS, Jetstream) listens on loopback only: the dev-env
// servers would otherwise listen on all interfaces.
const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (...args) {
  if (args[0] === undefined || args[0] === null || typeof args[0] === 'function') {
    args.splice(0, args[0] == null ? 1 : 0, 0, LOOPBACK)
  } else if (typeof args[0] === 'number' || (typeof args[0] === 'string' && /^\d+$/.test(args[0]))) {
    if (typeof args[1] !== 'string') args.splice(1, 0, LOOPBACK)
  } else if (args[0] && typeof args[0] === 'object' && 'port' in args[0] && !args[0].host) {
    args[0] = { ...args[0], host: LOOPBACK }
  }
  return listen.apply(this, args)
}

const modules = process.env.PLAZA_BLUESKY_PEER_MODULES
if (!modules || !fs.existsSync(modules)) {
  log('PLAZA_BLUESKY_PEER_MODULES must name the installed node_modules (run deploy/local/bluesky-peer.sh install)')
  process.exit(2)
}
const require = createRequire(path.join(modules, 'plaza-bluesky-peer.cjs'))
const load = (name) => import(pathToFileURL(require.resolve(name)).href)

// The data of this run (SQLite, blobs, actor stores) in a directory of its own: dev-env puts its
// directories under os.tmpdir(), and leaves them behind.
const ownsData = !process.env.PLAZA_BLUESKY_PEER_DATA
const dataDir = ownsData
  ? fs.mkdtempSync(path.join(os.tmpdir(), 'plaza-bluesky-peer-'))
  : path.resolve(process.env.PLAZA_BLUESKY_PEER_DATA)
fs.mkdirSync(dataDir, { recursive: true })
process.env.TMPDIR = dataDir
// Also when start-up fails: a temporary directory of ours never outlives the process.
process.on('exit', () => ownsData && fs.rmSync(dataDir, { recursive: true, force: true }))

// The PDS's own errors (a refused createRecord's reason, say) go to stderr, the peer's log.
process.env.LOG_ENABLED ??= 'true'
process.env.LOG_LEVEL ??= 'error'
process.env.LOG_DESTINATION ??= '/dev/stderr'

const port = (name) => Number(process.env[`PLAZA_BLUESKY_PEER_${name}_PORT`] || 0)
// dev-env spreads these over the free port it picked: a key set to undefined would win.
const withPort = (name, config) => (port(name) ? { ...config, port: port(name) } : config)

const { TestNetworkNoAppView } = await load('@atproto/dev-env')
const { Firehose } = await load('@atproto/sync')
const { lexToJson } = await load('@atproto/lex-json')
const wsModule = await load('ws')
const WebSocketServer = wsModule.WebSocketServer ?? wsModule.default.WebSocketServer

const started = performance.now()
const network = await TestNetworkNoAppView.create({
  plc: withPort('PLC', {}),
  pds: withPort('PDS', { hostname: 'localhost' }),
})
const pdsUrl = `http://${LOOPBACK}:${network.pds.port}`
const plcUrl = `http://${LOOPBACK}:${network.plc.port}`

// --- Jetstream ----------------------------------------------------------------------------------

/** Every event seen, oldest first: {timeUs, did, kind, collection, json}. */
const events = []
const clients = new Set()
let lastTimeUs = 0
let lastSeq

// Jetstream's cursor is the time it received an event, in unix microseconds; unique and rising.
const nextTimeUs = () => {
  lastTimeUs = Math.max(Date.now() * 1000, lastTimeUs + 1)
  return lastTimeUs
}

const toJetstream = (evt) => {
  const base = { did: evt.did, time_us: nextTimeUs() }
  if (evt.event === 'create' || evt.event === 'update' || evt.event === 'delete') {
    const commit = { rev: evt.rev, operation: evt.event, collection: evt.collection, rkey: evt.rkey }
    if (evt.event !== 'delete') {
      commit.record = lexToJson(evt.record)
      commit.cid = evt.cid.toString()
    }
    return { ...base, kind: 'commit', commit }
  }
  if (evt.event === 'identity') {
    const identity = { did: evt.did, seq: evt.seq, time: evt.time }
    if (evt.handle) identity.handle = evt.handle
    return { ...base, kind: 'identity', identity }
  }
  if (evt.event === 'account') {
    const account = { active: evt.active, did: evt.did, seq: evt.seq, time: evt.time }
    if (evt.status) account.status = evt.status
    return { ...base, kind: 'account', account }
  }
  return undefined // #sync: Jetstream does not re-serve it
}

const NSID = /^[a-zA-Z]([a-zA-Z0-9-]{0,62})?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,62})?)+(\.\*)?$/
const DID = /^did:[a-z]+:[a-zA-Z0-9._:%-]+$/

class OptionsError extends Error {}

/** Jetstream's subscriber options; the same checks for the query string and options_update. */
const parseOptions = ({ wantedCollections = [], wantedDids = [], maxMessageSizeBytes = 0 }) => {
  if (!Array.isArray(wantedCollections) || !Array.isArray(wantedDids)) {
    throw new OptionsError('wantedCollections and wantedDids must be lists')
  }
  if (wantedCollections.length > 100) throw new OptionsError('too many wantedCollections (at most 100)')
  if (wantedDids.length > 10_000) throw new OptionsError('too many wantedDids (at most 10,000)')
  const exact = new Set()
  const prefixes = []
  for (const col of wantedCollections) {
    if (typeof col !== 'string' || !NSID.test(col)) throw new OptionsError(`invalid collection: ${col}`)
    if (col.endsWith('.*')) prefixes.push(col.slice(0, -1))
    else exact.add(col)
  }
  for (const did of wantedDids) {
    if (typeof did !== 'string' || !DID.test(did)) throw new OptionsError(`invalid did: ${did}`)
  }
  const maxSize = Number(maxMessageSizeBytes)
  if (!Number.isInteger(maxSize) || maxSize < 0) throw new OptionsError('invalid maxMessageSizeBytes')
  return {
    dids: wantedDids.length ? new Set(wantedDids) : undefined,
    collection: exact.size || prefixes.length
      ? (col) => exact.has(col) || prefixes.some((p) => col.startsWith(p))
      : () => true,
    maxSize,
  }
}

const wants = (client, event) => {
  const { options } = client
  if (options.dids && !options.dids.has(event.did)) return false
  // Account and identity events reach every subscriber whatever its collections.
  if (event.kind === 'commit' && !options.collection(event.collection)) return false
  if (options.maxSize > 0 && Buffer.byteLength(event.json) > options.maxSize) return false
  return true
}

const send = (client, event) => {
  if (wants(client, event)) client.ws.send(event.json)
}

/** Replays from the cursor (buffered events at or after it) and turns the client live. */
const begin = (client) => {
  if (client.cursor !== undefined && client.cursor <= Date.now() * 1000) {
    let i = 0
    while (i < events.length && events[i].timeUs < client.cursor) i++
    for (; i < events.length; i++) send(client, events[i])
  }
  client.live = true
}

const publish = (evt) => {
  const body = toJetstream(evt)
  if (!body) return
  const event = {
    timeUs: body.time_us,
    did: body.did,
    kind: body.kind,
    collection: body.commit?.collection,
    json: JSON.stringify(body),
  }
  events.push(event)
  if (events.length > MAX_BUFFERED_EVENTS) events.shift()
  for (const client of clients) if (client.live) send(client, event)
}

const badRequest = (socket, message) => {
  const body = JSON.stringify({ error: 'BadRequest', message })
  socket.end(
    `HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  )
}

const wss = new WebSocketServer({ noServer: true })
const jetstream = http.createServer((req, res) => {
  res.writeHead(req.url === '/' ? 200 : 404, { 'content-type': 'text/plain' })
  res.end(req.url === '/' ? 'Plaza test Jetstream: connect to /subscribe\n' : 'not found\n')
})
jetstream.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, `http://${LOOPBACK}`)
  if (url.pathname !== '/subscribe') return badRequest(socket, 'unknown path: use /subscribe')
  const q = url.searchParams
  let options
  let cursor
  try {
    options = parseOptions({
      wantedCollections: q.getAll('wantedCollections'),
      wantedDids: q.getAll('wantedDids'),
      maxMessageSizeBytes: q.get('maxMessageSizeBytes') ?? 0,
    })
    if (q.has('cursor')) {
      cursor = Number(q.get('cursor'))
      if (!Number.isSafeInteger(cursor)) throw new OptionsError('invalid cursor: unix microseconds expected')
    }
    if (q.get('compress') === 'true') throw new OptionsError('compress (zstd) is not served by this test Jetstream')
  } catch (err) {
    if (err instanceof OptionsError) return badRequest(socket, err.message)
    throw err
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    const client = { ws, options, cursor, live: false }
    clients.add(client)
    ws.on('close', () => clients.delete(client))
    ws.on('error', (err) => log(`subscriber error: ${err.message}`))
    ws.on('message', (data) => {
      let msg
      try {
        msg = JSON.parse(data.toString())
      } catch {
        return ws.close(1003, 'subscriber messages are JSON')
      }
      if (msg?.type !== 'options_update') return ws.close(1003, `unknown message type: ${msg?.type}`)
      try {
        client.options = parseOptions(msg.payload ?? {})
      } catch (err) {
        if (err instanceof OptionsError) return ws.close(1008, err.message.slice(0, 120))
        throw err
      }
      if (!client.live) begin(client)
    })
    // requireHello: nothing is sent until the first options_update.
    if (q.get('requireHello') !== 'true') begin(client)
  })
})
await new Promise((resolve) => jetstream.listen(port('JETSTREAM'), LOOPBACK, resolve))
const jetstreamUrl = `ws://${LOOPBACK}:${jetstream.address().port}`

// The PDS firehose, from its first event, so nothing created before the subscription is missed.
const firehose = new Firehose({
  service: `ws://${LOOPBACK}:${network.pds.port}`,
  idResolver: network.pds.ctx.idResolver,
  getCursor: () => lastSeq ?? 0,
  handleEvent: (evt) => {
    lastSeq = evt.seq
    publish(evt)
  },
  onError: (err) => log(`firehose: ${err.message}`),
})
const firehoseDone = firehose.start()

// --- accounts -----------------------------------------------------------------------------------

const xrpc = async (method, body) => {
  const res = await fetch(`${pdsUrl}/xrpc/${method}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
  const json = await res.json()
  if (!res.ok) throw new Error(`${method}: ${res.status} ${JSON.stringify(json)}`)
  return json
}

const createAccount = async (handle) => {
  const password = randomBytes(12).toString('base64url')
  const name = handle.split('.')[0]
  const { did } = await xrpc('com.atproto.server.createAccount', {
    handle,
    email: `${name}@example.test`,
    password,
  })
  return { handle, did, password }
}

const city = await createAccount(CITY)
const citizens = []
for (const handle of CITIZENS) citizens.push(await createAccount(handle))

// Ready once the firehose has delivered every account's creation: from here on the Jetstream is live.
const waitFor = async (check, what, ms = 20_000) => {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}
const seen = (did) => events.some((e) => e.did === did)
await waitFor(() => [city, ...citizens].every((a) => seen(a.did)), 'the accounts on the firehose')

let closing = false
const shutdown = async (signal) => {
  if (closing) return
  closing = true
  log(`${signal}: closing`)
  setTimeout(() => process.exit(0), 5000).unref()
  for (const client of clients) client.ws.terminate()
  await new Promise((r) => jetstream.close(r))
  await firehose.destroy().catch(() => {})
  await firehoseDone.catch(() => {})
  await network.close().catch((err) => log(`close: ${err.message}`))
  process.exit(0)
}
process.on('SIGTERM', () => shutdown('SIGTERM'))
process.on('SIGINT', () => shutdown('SIGINT'))
// A test session that dies (even by SIGKILL) closes our stdin: the peer does not outlive it.
if (process.env.PLAZA_BLUESKY_PEER_EXIT_ON_STDIN_EOF === '1') {
  process.stdin.on('end', () => shutdown('stdin closed'))
  process.stdin.resume()
}

const ready = {
  plaza_bluesky_peer: 'ready',
  pds_url: pdsUrl,
  plc_url: plcUrl,
  jetstream_url: jetstreamUrl,
  accounts: { city, citizens },
  data_dir: dataDir,
  pid: process.pid,
  node: process.version,
  start_ms: Math.round(performance.now() - started),
}
process.stdout.write(`${JSON.stringify(ready)}\n`)
log(`ready in ${ready.start_ms} ms: PDS ${pdsUrl}, Jetstream ${jetstreamUrl}/subscribe`)
