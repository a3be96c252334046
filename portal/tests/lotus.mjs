// Starts the real `lotus` binary for the browser tests: free loopback ports, a temporary data
// directory, the administrator's password from LOTUS_ADMIN_PASSWORD, and the production build
// of the portal served at `/` (`--portal-dir`).

import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, readdirSync, openSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createServer } from 'node:net'
import { chromium } from 'playwright-core'

export const PORTAL = resolve(dirname(fileURLToPath(import.meta.url)), '..')
export const DIST = join(PORTAL, 'dist')
export const ADMIN_PASSWORD = 'portal-tests-admin-pw'

/** Debian's chromium; never a downloaded browser. */
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium'
/** The flags every browser test launches chromium with: headless, offline, no updates or sync. */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
]

/**
 * Chromium with a fresh user-data dir (`profile`, removed by the test's `after`) and one page
 * that waits 15 s at most and logs the portal's uncaught errors.
 */
export async function launchBrowser({ locale, name }) {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium`)
  const profile = mkdtempSync(join(tmpdir(), `lotus-${name}-chromium-`))
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1366, height: 860 },
    locale,
  })
  const page = context.pages()[0] ?? (await context.newPage())
  page.setDefaultTimeout(15_000)
  page.on('pageerror', (e) => console.log(`# page error: ${e.message}`))
  return { context, page, profile }
}

/** `LOTUS_BIN`, else `$CARGO_TARGET_DIR/debug/lotus`, else `../target/debug/lotus`. */
export function lotusBinary() {
  const candidates = [
    process.env.LOTUS_BIN,
    process.env.CARGO_TARGET_DIR && join(process.env.CARGO_TARGET_DIR, 'debug', 'lotus'),
    join(PORTAL, '..', 'target', 'debug', 'lotus'),
  ].filter(Boolean)
  const found = candidates.find((p) => existsSync(p))
  if (!found) {
    throw new Error(
      `no lotus binary at ${candidates.join(', ')}: build it with \`cargo build -p lotus\` or set LOTUS_BIN`,
    )
  }
  return resolve(found)
}

function newest(dir) {
  let t = 0
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs)
  }
  return t
}

/** Builds the portal when dist/ is missing or older than its sources. */
export function ensureBuilt() {
  const index = join(DIST, 'index.html')
  const sources = Math.max(
    newest(join(PORTAL, 'src')),
    ...['index.html', 'vite.config.ts', 'package-lock.json'].map((f) => statSync(join(PORTAL, f)).mtimeMs),
  )
  if (existsSync(index) && statSync(index).mtimeMs >= sources) return
  console.log('# building the portal (dist/ is missing or older than src/)')
  const r = spawnSync('npm', ['run', 'build'], { cwd: PORTAL, encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`npm run build failed:\n${r.stdout}\n${r.stderr}`)
}

/** Whether this binary serves the portal itself (`lotus serve --portal-dir`). */
function servesPortal(bin) {
  const r = spawnSync(bin, ['serve', '--help'], { encoding: 'utf8' })
  return (r.stdout ?? '').includes('--portal-dir')
}

async function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer()
    s.once('error', fail)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => ok(port))
    })
  })
}

async function waitFor(what, ms, f) {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await f()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

/**
 * A running node. `url` is where the browser goes: the node itself, or — for a binary that
 * cannot serve the portal yet — `vite preview` in front of it (reported as `mode: 'preview'`).
 * `env` adds configuration as `LOTUS_*` environment variables (e.g. `LOTUS_AUTH__OIDC__ISSUER`).
 */
export async function startLotus({ env: config = {} } = {}) {
  const bin = lotusBinary()
  const dataDir = mkdtempSync(join(tmpdir(), 'lotus-portal-'))
  const ready = join(dataDir, 'ready.json')
  const log = openSync(join(dataDir, 'lotus.log'), 'a')
  const portal = servesPortal(bin)
  const any = '127.0.0.1:0'
  const args = [
    'serve',
    '--data-dir', dataDir,
    '--http-listen', any,
    '--mqtt-listen', any,
    '--mqtt-ws-listen', any,
    '--coap-listen', any,
    '--coap-dtls-listen', any,
    '--coap-encrypted-listen', any,
    '--log-format', 'text',
    '--ready-file', ready,
    ...(portal ? ['--portal-dir', DIST] : []),
  ]
  const env = { ...process.env, ...config, LOTUS_ADMIN_PASSWORD: ADMIN_PASSWORD }
  delete env.LOTUS_CONFIG
  delete env.LOTUS_BIN
  const child = spawn(bin, args, { env, stdio: ['ignore', log, log] })
  orphanGuard(child)
  let exited = null
  child.once('exit', (code, signal) => (exited = { code, signal }))
  const info = await waitFor('lotus to be ready', 60_000, () => {
    if (exited) throw new Error(`lotus exited (${JSON.stringify(exited)}); log:\n${readFileSync(join(dataDir, 'lotus.log'), 'utf8')}`)
    try {
      return JSON.parse(readFileSync(ready, 'utf8'))
    } catch {
      return null
    }
  })
  const http = `http://${info.http[0]}`
  const [mqttHost, mqttPort] = splitAddr(info.mqtt[0])
  const node = { bin, dataDir, http, mqtt: { host: mqttHost, port: mqttPort }, mode: portal ? 'lotus' : 'preview', url: http, child }
  if (!portal) {
    const port = await freePort()
    const vite = join(PORTAL, 'node_modules', 'vite', 'bin', 'vite.js')
    node.preview = spawn(process.execPath, [vite, 'preview', '--host', '127.0.0.1', '--port', String(port), '--strictPort'], {
      cwd: PORTAL,
      env: { ...process.env, LOTUS_API: http },
      stdio: ['ignore', log, log],
    })
    orphanGuard(node.preview)
    node.url = `http://127.0.0.1:${port}`
    await waitFor('vite preview', 30_000, async () => {
      try {
        return (await fetch(node.url)).ok
      } catch {
        return false
      }
    })
  }
  return node
}

/** A test run that dies (Ctrl-C, an uncaught error) takes its servers with it. */
function orphanGuard(child) {
  const kill = () => {
    if (child.exitCode === null) child.kill('SIGKILL')
  }
  process.once('exit', kill)
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.once(sig, () => {
      kill()
      process.exit(130)
    })
  }
}

function splitAddr(a) {
  const i = a.lastIndexOf(':')
  return [a.slice(0, i).replace(/^\[|\]$/g, ''), Number(a.slice(i + 1))]
}

export async function stopLotus(node) {
  if (!node) return
  for (const p of [node.preview, node.child]) {
    if (p && p.exitCode === null) {
      p.kill('SIGTERM')
      await Promise.race([new Promise((r) => p.once('exit', r)), new Promise((r) => setTimeout(r, 10_000))])
      if (p.exitCode === null) p.kill('SIGKILL')
    }
  }
  if (process.env.KEEP_DATA) console.log(`# node data kept in ${node.dataDir}`)
  else rmSync(node.dataDir, { recursive: true, force: true })
}

/** A small API client for the test's own set-up calls. */
export function apiClient(base) {
  let token = null
  async function call(method, path, body, { contentType } = {}) {
    const headers = {}
    if (token) headers.Authorization = `Bearer ${token}`
    let payload
    if (body !== undefined) {
      headers['Content-Type'] = contentType ?? 'application/json'
      payload = contentType ? body : JSON.stringify(body)
    }
    const r = await fetch(base + path, { method, headers, body: payload })
    const text = await r.text()
    let data = text
    try {
      data = text ? JSON.parse(text) : null
    } catch {
      // not JSON
    }
    return { status: r.status, data }
  }
  return {
    call,
    async login(username = 'admin', password = ADMIN_PASSWORD) {
      const r = await call('POST', '/api/v1/auth/login', { username, password })
      if (r.status !== 200) throw new Error(`log-in failed: ${r.status} ${JSON.stringify(r.data)}`)
      token = r.data.token
      return r.data
    },
    async expect(method, path, body, status, opts) {
      const r = await call(method, path, body, opts)
      if (r.status !== status) throw new Error(`${method} ${path}: expected ${status}, got ${r.status} ${JSON.stringify(r.data)}`)
      return r.data
    },
  }
}
