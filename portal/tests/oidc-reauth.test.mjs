// An app's OpenID Connect requests that ask more of the portal, in a real browser against the
// real `lotus` binary: `prompt=none` without a session goes straight back to the app with
// `login_required`; `prompt=login` shows a password form for the logged-in user before the code
// is issued; an app's logout (RP-initiated) ends the portal session and returns to the app.
//
//   cargo build -p lotus && npm run build && node --test tests/oidc-reauth.test.mjs

import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { mkdirSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { PORTAL, apiClient, ensureBuilt, startLotus, stopLotus, launchBrowser } from './lotus.mjs'

const RESULTS = join(PORTAL, 'test-results')
const PASSWORD = 'viewer-pw-2026'

let node
let app
let context
let page
let profile

const b64url = (buf) => buf.toString('base64url')

/** An authorization request of the app; its PKCE verifier and state. */
function request(more = {}) {
  const verifier = b64url(randomBytes(32))
  const state = b64url(randomBytes(16))
  const q = new URLSearchParams({
    response_type: 'code',
    client_id: app.clientId,
    redirect_uri: `${node.http}/app-callback`,
    scope: 'openid profile',
    state,
    nonce: b64url(randomBytes(16)),
    code_challenge: b64url(createHash('sha256').update(verifier).digest()),
    code_challenge_method: 'S256',
    ...more,
  })
  return { url: `${node.http}/oauth2/authorize?${q}`, verifier, state }
}

/** The app's back end: the code for tokens. */
async function exchange(code, verifier) {
  const r = await fetch(`${node.http}/oauth2/token`, {
    method: 'POST',
    headers: {
      Authorization: `Basic ${Buffer.from(`${app.clientId}:${app.secret}`).toString('base64')}`,
      'Content-Type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({
      grant_type: 'authorization_code',
      code,
      redirect_uri: `${node.http}/app-callback`,
      code_verifier: verifier,
    }),
  })
  assert.equal(r.status, 200)
  return r.json()
}

const claims = (idToken) => JSON.parse(Buffer.from(idToken.split('.')[1], 'base64url').toString())
const storedSession = () => page.evaluate(() => localStorage.getItem('lotus.session'))

before(async () => {
  ensureBuilt()
  mkdirSync(RESULTS, { recursive: true })
  node = await startLotus()
  const admin = apiClient(node.http)
  await admin.login()
  await admin.expect('POST', '/api/v1/users', { username: 'watcher', password: PASSWORD, roles: ['viewer'] }, 201)
  app = await admin.expect(
    'POST',
    '/api/v1/apps',
    {
      name: 'Street parking',
      type: 'web',
      url: `${node.http}/app-home`,
      redirectUris: [`${node.http}/app-callback`],
      postLogoutRedirectUris: [`${node.http}/app-goodbye`],
      openRoles: ['viewer'],
    },
    201,
  )
  ;({ context, page, profile } = await launchBrowser({ locale: 'en', name: 'portal' }))
})

after(async () => {
  await context?.close()
  if (profile) rmSync(profile, { recursive: true, force: true })
  await stopLotus(node)
})

describe('OpenID Connect prompts and logout in the portal', () => {
  test('prompt=none without a session goes back to the app with login_required', async () => {
    await page.goto(`${node.url}/login`)
    await page.evaluate(() => localStorage.clear())
    const r = request({ prompt: 'none' })
    await page.goto(r.url)
    await page.waitForURL(/\/app-callback\?/)
    const back = new URL(page.url())
    assert.equal(back.searchParams.get('error'), 'login_required')
    assert.equal(back.searchParams.get('state'), r.state)
    assert.equal(back.searchParams.get('code'), null)
  })

  test('without prompt=none, a request without a session goes to the log-in page first', async () => {
    const r = request()
    await page.goto(r.url)
    await page.waitForURL(/\/login\?redirect=/)
    await page.locator('input[data-test=login-username]').fill('watcher')
    await page.locator('input[data-test=login-password]').fill(PASSWORD)
    await page.locator('[data-test=login-submit]').click()
    await page.waitForURL(/\/app-callback\?code=/)
    assert.equal(new URL(page.url()).searchParams.get('state'), r.state)
  })

  test('prompt=login asks the logged-in user for the password before the code', async () => {
    const loggedIn = Math.floor(Date.now() / 1000)
    await new Promise((ok) => setTimeout(ok, 1_100))
    const r = request({ prompt: 'login' })
    await page.goto(r.url)
    const form = page.locator('[data-test=authorize-reauth]')
    await form.waitFor()
    assert.match(await page.locator('[data-test=authorize-reauth-reason]').innerText(), /password|密码/)
    assert.match(page.url(), /\/authorize\?/)
    await page.locator('input[data-test=authorize-password]').fill('not-the-password')
    await page.locator('[data-test=authorize-reauth-submit]').click()
    await form.locator('.el-form-item__error', { hasText: /password is wrong/ }).waitFor()
    assert.match(page.url(), /\/authorize\?/, 'no code for a wrong password')
    await page.screenshot({ path: join(RESULTS, '30-oidc-reauth.png'), fullPage: true })
    await page.locator('input[data-test=authorize-password]').fill(PASSWORD)
    await page.locator('[data-test=authorize-reauth-submit]').click()
    await page.waitForURL(/\/app-callback\?code=/)
    const back = new URL(page.url())
    assert.equal(back.searchParams.get('state'), r.state)
    const tokens = await exchange(back.searchParams.get('code'), r.verifier)
    assert.ok(claims(tokens.id_token).auth_time > loggedIn, 'auth_time is the re-authentication')
  })

  test('an app’s logout ends the portal session and returns to the app', async () => {
    const r = request()
    await page.goto(r.url)
    await page.waitForURL(/\/app-callback\?code=/)
    const tokens = await exchange(new URL(page.url()).searchParams.get('code'), r.verifier)
    assert.notEqual(await storedSession(), null)
    const q = new URLSearchParams({
      id_token_hint: tokens.id_token,
      post_logout_redirect_uri: `${node.http}/app-goodbye`,
      state: 'bye-1',
    })
    await page.goto(`${node.http}/oauth2/logout?${q}`)
    await page.waitForURL(/\/app-goodbye\?state=bye-1/)
    assert.equal(await storedSession(), null, 'the portal forgot its session')
    const info = await fetch(`${node.http}/oauth2/userinfo`, { headers: { Authorization: `Bearer ${tokens.access_token}` } })
    assert.equal(info.status, 401, 'the app’s access token is revoked')
    // An unregistered post-logout URI gets a page, not a redirect.
    q.set('post_logout_redirect_uri', 'https://evil.example/')
    const resp = await page.goto(`${node.http}/oauth2/logout?${q}`)
    assert.equal(resp.status(), 400)
    assert.match(await page.locator('[data-test=oidc-error]').innerText(), /not registered/)
  })
})
