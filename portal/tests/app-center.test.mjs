// The app center and single sign-on in a real browser against the real `lotus` binary: a user
// sees the apps their role may open and not the others, and an app's OpenID Connect sign-in
// goes through the portal's /authorize page without a second log-in.
//
//   npm test        # with the other browser tests

import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { mkdirSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { PORTAL, apiClient, ensureBuilt, startLotus, stopLotus, launchBrowser } from './lotus.mjs'

const RESULTS = join(PORTAL, 'test-results')
const PASSWORD = 'viewer-pw-2026'

let node
let admin
let context
let page
let profile
const apps = {}

const b64url = (buf) => buf.toString('base64url')

before(async () => {
  ensureBuilt()
  mkdirSync(RESULTS, { recursive: true })
  node = await startLotus()
  admin = apiClient(node.http)
  await admin.login()
  await admin.expect('POST', '/api/v1/users', { username: 'watcher', password: PASSWORD, roles: ['viewer'] }, 201)
  // Parking opens for viewers; it sends users back to a page of this node, so the browser can
  // follow the whole sign-in.
  for (const [name, roles] of [
    ['Street parking', ['viewer']],
    ['Water network', ['operator']],
  ]) {
    apps[name] = await admin.expect(
      'POST',
      '/api/v1/apps',
      {
        name,
        type: 'web',
        url: `${node.http}/app-home/${encodeURIComponent(name)}`,
        vendor: 'City ISV',
        description: `${name} for the city`,
        redirectUris: [`${node.http}/app-callback`],
        openRoles: roles,
      },
      201,
    )
  }
  ;({ context, page, profile } = await launchBrowser({ locale: 'en', name: 'portal' }))
})

after(async () => {
  await context?.close()
  if (profile) rmSync(profile, { recursive: true, force: true })
  await stopLotus(node)
})

describe('app center', () => {
  test('a viewer sees the app their role may open, and not the operators’ app', async () => {
    await page.goto(`${node.url}/apps`)
    await page.waitForURL(/\/login\?redirect=/)
    await page.locator('input[data-test=login-username]').fill('watcher')
    await page.locator('input[data-test=login-password]').fill(PASSWORD)
    await page.locator('[data-test=login-submit]').click()
    await page.waitForURL(/\/apps$/)
    const card = page.locator('[data-test=app-card]', { hasText: 'Street parking' })
    await card.waitFor()
    assert.equal(await card.getAttribute('data-client-id'), apps['Street parking'].clientId)
    assert.equal(await card.locator('[data-test=app-open]').getAttribute('href'), apps['Street parking'].url)
    assert.equal(await page.locator('[data-test=app-card]').count(), 1)
    assert.equal(await page.locator('[data-test=app-card]', { hasText: 'Water network' }).count(), 0)
    await page.screenshot({ path: join(RESULTS, '20-app-center.png'), fullPage: true })
  })

  test('the app signs the logged-in user in without a second log-in', async () => {
    const verifier = b64url(randomBytes(32))
    const state = b64url(randomBytes(16))
    const q = new URLSearchParams({
      response_type: 'code',
      client_id: apps['Street parking'].clientId,
      redirect_uri: `${node.http}/app-callback`,
      scope: 'openid profile',
      state,
      nonce: b64url(randomBytes(16)),
      code_challenge: b64url(createHash('sha256').update(verifier).digest()),
      code_challenge_method: 'S256',
    })
    await page.goto(`${node.http}/oauth2/authorize?${q}`)
    await page.waitForURL(/\/app-callback\?code=/)
    const back = new URL(page.url())
    assert.equal(back.searchParams.get('state'), state)
    assert.ok(back.searchParams.get('code').length >= 43)
  })

  test('an app the role may not open is refused on the authorize page', async () => {
    const q = new URLSearchParams({
      response_type: 'code',
      client_id: apps['Water network'].clientId,
      redirect_uri: `${node.http}/app-callback`,
      scope: 'openid',
      state: 's',
      code_challenge: b64url(createHash('sha256').update(b64url(randomBytes(32))).digest()),
      code_challenge_method: 'S256',
    })
    await page.goto(`${node.http}/oauth2/authorize?${q}`)
    const error = page.locator('[data-test=authorize-error]')
    await error.waitFor()
    assert.match(await error.innerText(), /app\.open/)
    assert.match(page.url(), /\/authorize\?/)
    await page.screenshot({ path: join(RESULTS, '21-authorize-refused.png'), fullPage: true })
  })

  test('the log-in page takes a session handed over in the URL fragment', async () => {
    // What `GET /api/v1/auth/oidc/callback` sends the browser to after a log-in through the
    // city's identity provider.
    const watcher = apiClient(node.http)
    const session = await watcher.login('watcher', PASSWORD)
    await page.evaluate(() => localStorage.clear())
    const fragment = new URLSearchParams({
      token: session.token,
      expiresAt: String(session.expiresAt),
      username: 'watcher',
      roles: 'viewer',
      redirect: '/apps',
    })
    await page.goto(`${node.url}/login#${fragment}`)
    await page.waitForURL(/\/apps$/)
    await page.locator('[data-test=app-card]', { hasText: 'Street parking' }).waitFor()
    assert.ok(!page.url().includes('token'), 'the token is removed from the address bar')
    // This node has no external provider configured: no button.
    await page.evaluate(() => localStorage.clear())
    await page.goto(`${node.url}/login`)
    await page.locator('[data-test=login-submit]').waitFor()
    assert.equal(await page.locator('[data-test=login-oidc]').count(), 0)
  })
})
