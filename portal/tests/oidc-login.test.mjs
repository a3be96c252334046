// Log-in through the city's identity provider, in a real browser against two real `lotus`
// nodes: node A is the city's provider (an OpenID Connect provider for the apps of its app
// registry, node B among them), node B logs its operators in through A (`[auth.oidc]`).
// The operator clicks B's "city account" button, logs in on A's portal, and comes back to B
// logged in; a session already held on B (the administrator's) is replaced, not kept; a wrong
// password at A leaves B logged out; a forged hand-over ends the old session and says why.
//
//   npm test        # with the other browser tests

import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { chromium } from 'playwright-core'
import { PORTAL, ADMIN_PASSWORD, apiClient, ensureBuilt, startLotus, stopLotus, CHROMIUM, CHROMIUM_ARGS } from './lotus.mjs'

const RESULTS = join(PORTAL, 'test-results')
const USER = 'citizen-op'
/** The operator's password at the provider, A. */
const PASSWORD = 'Civic-2026-at-A'
/** Their password on B: never typed in this test, the log-in goes through A. */
const PASSWORD_ON_B = 'Local-2026-at-B'
const LABEL = 'City account'

let a
let b
let browser
let adminToB

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium`)
  ensureBuilt()
  mkdirSync(RESULTS, { recursive: true })

  // A: the provider, with the operator's account and B registered as an app.
  a = await startLotus()
  if (a.mode !== 'lotus') {
    throw new Error(
      `${a.bin} cannot serve the portal (--portal-dir): the provider's /authorize page and the log-in ` +
        'callback need the portal on the nodes themselves; build the current binary with `cargo build -p lotus`',
    )
  }
  const adminA = apiClient(a.http)
  await adminA.login()
  await adminA.expect('POST', '/api/v1/users', { username: USER, password: PASSWORD, roles: ['viewer'] }, 201)
  // B's address is known once it runs; the registration takes it afterwards.
  const app = await adminA.expect(
    'POST',
    '/api/v1/apps',
    { name: 'District node B', type: 'web', redirectUris: ['http://placeholder.invalid/cb'], openRoles: ['viewer'] },
    201,
  )

  // B: relies on A; the operator's account exists there too (B creates none at log-in).
  b = await startLotus({
    env: {
      LOTUS_AUTH__OIDC__ISSUER: a.http,
      LOTUS_AUTH__OIDC__CLIENT_ID: app.clientId,
      LOTUS_AUTH__OIDC__CLIENT_SECRET: app.secret,
      LOTUS_AUTH__OIDC__LABEL: LABEL,
    },
  })
  adminToB = apiClient(b.http)
  await adminToB.login()
  await adminToB.expect('POST', '/api/v1/users', { username: USER, password: PASSWORD_ON_B, roles: ['operator'] }, 201)
  await adminA.expect(
    'PATCH',
    `/api/v1/apps/${app.clientId}`,
    { url: `${b.url}/`, redirectUris: [`${b.http}/api/v1/auth/oidc/callback`] },
    200,
  )

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
  })
})

after(async () => {
  await browser?.close()
  await stopLotus(b)
  await stopLotus(a)
})

/** A browser profile of its own (no session on A or B), the portal in English. */
async function freshContext() {
  const context = await browser.newContext({ viewport: { width: 1366, height: 860 }, locale: 'en' })
  await context.addInitScript(() => localStorage.setItem('lotus.locale', 'en'))
  return context
}

async function newPage(context) {
  const page = await context.newPage()
  page.setDefaultTimeout(15_000)
  page.on('pageerror', (e) => console.log(`# page error: ${e.message}`))
  return page
}

const at = (node, path) => (u) => u.origin === node.url && u.pathname === path

/** The session B's portal holds in this browser, as stored. */
const storedSession = (page) => page.evaluate(() => JSON.parse(localStorage.getItem('lotus.session') ?? 'null'))

/** What B says about a session token. */
async function whoIs(token) {
  const r = await fetch(`${b.http}/api/v1/me`, { headers: { Authorization: `Bearer ${token}` } })
  return { status: r.status, me: r.status === 200 ? await r.json() : null }
}

/** From B's log-in page (already open) through the button to A's log-in page, and submit it. */
async function logInThroughA(page, password, shot) {
  const button = page.locator('[data-test=login-oidc]')
  await button.waitFor()
  assert.equal((await button.innerText()).trim(), LABEL)
  await button.click()
  // A's /authorize page asks for a log-in at A first, and comes back to itself after it.
  await page.waitForURL(at(a, '/login'))
  assert.match(new URL(page.url()).searchParams.get('redirect') ?? '', /^\/authorize\?/)
  await page.locator('input[data-test=login-username]').fill(USER)
  await page.locator('input[data-test=login-password]').fill(password)
  if (shot) await page.screenshot({ path: join(RESULTS, shot), fullPage: true })
  await page.locator('[data-test=login-submit]').click()
}

/** An administrator's log-in on B's portal form; returns the session token it stored. */
async function adminLogsInToB(page) {
  await page.goto(`${b.url}/login`)
  await page.locator('input[data-test=login-username]').fill('admin')
  await page.locator('input[data-test=login-password]').fill(ADMIN_PASSWORD)
  await page.locator('[data-test=login-submit]').click()
  await page.waitForURL(at(b, '/tasks'))
  await page.locator('[data-test=user-menu]', { hasText: 'admin' }).waitFor()
  const s = await storedSession(page)
  assert.equal(s.username, 'admin')
  return s.token
}

describe('registering the relying node at the provider', () => {
  test('the registration form says a new app is online at once, and what offline means', async () => {
    const context = await freshContext()
    try {
      const page = await newPage(context)
      await page.goto(`${a.url}/login`)
      await page.locator('input[data-test=login-username]').fill('admin')
      await page.locator('input[data-test=login-password]').fill(ADMIN_PASSWORD)
      await page.locator('[data-test=login-submit]').click()
      await page.waitForURL(at(a, '/tasks'))
      await page.goto(`${a.url}/config?tab=registry`)
      await page.locator('[data-test=app-table]').waitFor()
      await page.locator('[data-test=app-create]').click()
      const online = page.locator('[data-test=app-status-online]')
      await online.waitFor()
      assert.match((await online.getAttribute('class')) ?? '', /is-checked/, 'online is preselected')
      const hint = page.locator('[data-test=app-status-hint]')
      assert.match(await hint.innerText(), /New apps are online: once saved, users of its open roles see it/)
      await hint.scrollIntoViewIfNeeded()
      await page.screenshot({ path: join(RESULTS, 'oidc-login-app-status.png') })
      await page.locator('[data-test=app-status-offline]').click()
      assert.match(await hint.innerText(), /Hidden from the app center/)
    } finally {
      await context.close()
    }
  })
})

describe('log-in through the city’s identity provider', () => {
  test('an operator logs in to B with their account at A and lands on the page they asked for', async () => {
    const context = await freshContext()
    try {
      const page = await newPage(context)
      await page.goto(`${b.url}/devices`)
      await page.waitForURL(at(b, '/login'))
      await logInThroughA(page, PASSWORD, 'oidc-login-provider.png')
      await page.waitForURL(at(b, '/devices'))
      await page.locator('[data-test=user-menu]', { hasText: USER }).waitFor()
      assert.ok(!page.url().includes('token'), `the token is out of the address bar: ${page.url()}`)
      const s = await storedSession(page)
      assert.equal(s.username, USER)
      assert.deepEqual(s.roles, ['operator'], 'the roles are B’s, not A’s')
      const { status, me } = await whoIs(s.token)
      assert.equal(status, 200)
      assert.equal(me.username, USER)
      await page.screenshot({ path: join(RESULTS, 'oidc-login-shell.png'), fullPage: true })
    } finally {
      await context.close()
    }
  })

  test('a log-in through A replaces the administrator’s session held in another tab', async () => {
    const context = await freshContext()
    try {
      // One tab opens B's log-in page; meanwhile the administrator logs in to B in another.
      const flow = await newPage(context)
      await flow.goto(`${b.url}/login`)
      await flow.locator('[data-test=login-oidc]').waitFor()
      const other = await newPage(context)
      const adminToken = await adminLogsInToB(other)

      await logInThroughA(flow, PASSWORD)
      await flow.waitForURL(at(b, '/tasks'))
      await flow.locator('[data-test=user-menu]', { hasText: USER }).waitFor()
      assert.ok(!flow.url().includes('token'), `the token is out of the address bar: ${flow.url()}`)
      assert.equal((await storedSession(flow)).username, USER)
      // The administrator's session is ended on the server, not only forgotten here.
      assert.equal((await whoIs(adminToken)).status, 401)
      await flow.screenshot({ path: join(RESULTS, 'oidc-login-replaced.png'), fullPage: true })
      // The other tab, opened again, is the operator too.
      await other.reload()
      await other.locator('[data-test=user-menu]', { hasText: USER }).waitFor()
    } finally {
      await context.close()
    }
  })

  test('a wrong password at A shows A’s error and leaves B logged out', async () => {
    const context = await freshContext()
    try {
      const page = await newPage(context)
      await page.goto(`${b.url}/login`)
      await logInThroughA(page, 'not-the-password-2026')
      const error = page.locator('[data-test=login-error]')
      await error.waitFor()
      assert.match(await error.innerText(), /wrong username or password/)
      assert.ok(at(a, '/login')(new URL(page.url())), `still on A's log-in page: ${page.url()}`)
      await page.screenshot({ path: join(RESULTS, 'oidc-login-wrong-password.png'), fullPage: true })
      await page.goto(`${b.url}/tasks`)
      await page.waitForURL(at(b, '/login'))
      assert.equal(await storedSession(page), null)
      await page.locator('[data-test=login-oidc]').waitFor()
    } finally {
      await context.close()
    }
  })

  test('a forged session in the fragment ends the old session and says so', async () => {
    const context = await freshContext()
    try {
      const page = await newPage(context)
      const adminToken = await adminLogsInToB(page)
      const forged = new URLSearchParams({
        token: 'forged-token-that-b-never-issued',
        expiresAt: String(Date.now() + 3_600_000),
        username: 'admin',
        roles: 'admin',
        redirect: '/config',
      })
      await page.goto(`${b.url}/login#${forged}`)
      const error = page.locator('[data-test=login-error]')
      await error.waitFor()
      assert.match(await error.innerText(), /invalid or has expired.*log in again/)
      assert.ok(at(b, '/login')(new URL(page.url())) && !page.url().includes('token'), page.url())
      assert.equal(await storedSession(page), null, 'neither the forged nor the old session is kept')
      assert.equal((await whoIs(adminToken)).status, 401)
      // The way back in is offered.
      await page.locator('[data-test=login-oidc]').waitFor()
      await page.screenshot({ path: join(RESULTS, 'oidc-login-bad-handover.png'), fullPage: true })
    } finally {
      await context.close()
    }
  })
})
