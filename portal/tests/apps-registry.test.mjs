// The config center's app registry in a real browser against the real `lotus` binary: an
// administrator registers an ISV app with a product grant and an API action, is shown its secret
// once, finds it in the list and takes it offline with the keyboard; the API confirms each step.
// An app's MQTT topic grants are rows of a filter and subscribe/publish check boxes: a publish
// grant given with the keyboard is saved in the object form and shown again when reopened.
// The portal speaks Chinese by default, so the labels looked for are the Chinese ones.
//
//   npm test        # with the other browser tests
//
// Screenshots go to portal/test-results/apps-registry-*.png.

import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { PORTAL, ADMIN_PASSWORD, apiClient, ensureBuilt, startLotus, stopLotus, launchBrowser } from './lotus.mjs'

const RESULTS = join(PORTAL, 'test-results')
const APP = 'Smart parking'

let node
let api
let context
let page
let profile
let product
/** What the secret dialog showed. */
const shown = {}

async function shot(name) {
  await page.screenshot({ path: join(RESULTS, `apps-registry-${name}.png`), fullPage: true })
}

/** An input or textarea by the data-test attribute Element Plus puts on the native element. */
function field(name) {
  return page.locator(`input[data-test="${name}"], textarea[data-test="${name}"]`).first()
}

async function toast(kind, text) {
  const t = page.locator(`.el-message--${kind}`, text ? { hasText: text } : {}).first()
  await t.waitFor({ timeout: 10_000 })
  return t.innerText()
}

/** Picks the option whose text contains `option` in the multi-select `name`, typing `typed` to find it. */
async function pick(name, typed, option) {
  await page.locator(`.el-select[data-test=${name}], [data-test=${name}]`).first().click()
  await page.keyboard.type(typed)
  await page.locator('.el-select-dropdown__item:visible', { hasText: option }).first().click()
  // Closes the option list (Escape would close the whole dialog).
  await page.locator('.el-dialog__title:visible').first().click()
}

before(async () => {
  ensureBuilt()
  mkdirSync(RESULTS, { recursive: true })
  node = await startLotus()
  api = apiClient(node.http)
  await api.login()
  product = await api.expect('POST', '/api/v1/products', { name: 'Parking sensor', nodeType: 'direct', dataFormat: 'alink' }, 201)
  ;({ context, page, profile } = await launchBrowser({ locale: 'zh-CN', name: 'apps' }))
  await page.goto(node.url + '/login')
  await field('login-username').fill('admin')
  await field('login-password').fill(ADMIN_PASSWORD)
  await page.keyboard.press('Enter')
  await page.waitForURL(/\/tasks$/)
})

after(async () => {
  await context?.close()
  if (profile) rmSync(profile, { recursive: true, force: true })
  await stopLotus(node)
})

describe('config center: app registry', () => {
  test('register an app with a product grant and an API action; the secret is shown once', async () => {
    await page.goto(`${node.url}/config?tab=registry`)
    await page.locator('[data-test=app-table]').waitFor()
    await page.locator('[data-test=app-create]').click()
    await field('app-name').fill(APP)
    await field('app-url').fill('https://parking.example/')
    await field('app-vendor').fill('City ISV')
    await field('app-description').fill('Street parking occupancy')
    await pick('app-scopes', 'device.re', 'device.read')
    await pick('app-products', 'Parking', product.productKey)
    await page.locator('[data-test=app-redirect-add]').click()
    // A fragment is refused by the server; its problem detail is what the user sees.
    await field('app-redirect-0').fill('https://parking.example/callback#x')
    await page.locator('[data-test=app-submit]').click()
    assert.match(await toast('error', 'redirectUris[0]'), /without a #fragment/)
    assert.equal((await api.expect('GET', '/api/v1/apps', undefined, 200)).total, 0)

    await field('app-redirect-0').fill('https://parking.example/callback')
    await shot('form')
    await page.locator('[data-test=app-submit]').click()
    const dialog = page.locator('.el-dialog:visible', { hasText: 'Client ID' })
    await dialog.waitFor()
    shown.clientId = (await page.locator('[data-test="secret-Client ID"]').innerText()).trim()
    shown.secret = (await page.locator('[data-test="secret-密钥"]').innerText()).trim()
    assert.match(shown.clientId, /^app_[a-z2-7]{20}$/)
    assert.match(shown.secret, /^[A-Za-z0-9]{40}$/)
    await shot('secret')
    await page.locator('[data-test=secret-close]:visible').click()
    await dialog.waitFor({ state: 'hidden' })

    // Read back, the app carries no secret: the dialog was the only time it was shown.
    const app = await api.expect('GET', `/api/v1/apps/${shown.clientId}`, undefined, 200)
    assert.equal(app.secret, undefined)
    assert.deepEqual(
      [app.name, app.type, app.status, app.vendor, app.url, app.scopes, app.resources.products, app.redirectUris],
      [APP, 'web', 'online', 'City ISV', 'https://parking.example/', ['device.read'], [product.productKey], ['https://parking.example/callback']],
    )
  })

  test('the app is in the list and found by name', async () => {
    const table = page.locator('[data-test=app-table]')
    await table.locator('tr', { hasText: shown.clientId }).waitFor()
    await field('app-search').fill('parking')
    await field('app-search').press('Enter')
    await table.locator('tr', { hasText: APP }).waitFor()
    await field('app-search').fill('no such app')
    await field('app-search').press('Enter')
    await table.locator('.el-table__empty-text').waitFor()
    await field('app-search').fill('')
    await field('app-search').press('Enter')
    await table.locator('tr', { hasText: APP }).waitFor()
  })

  test('take the app offline with the keyboard; the API confirms status and grants', async () => {
    const toggle = page.getByRole('switch', { name: `${APP} 上线` })
    assert.equal(await toggle.getAttribute('aria-checked'), 'true')
    await toggle.focus()
    await page.keyboard.press('Enter')
    await toast('success', APP)
    await page.waitForFunction(
      (name) => document.querySelector(`input[role=switch][aria-label="${name} 上线"]`)?.getAttribute('aria-checked') === 'false',
      APP,
    )
    const app = await api.expect('GET', `/api/v1/apps/${shown.clientId}`, undefined, 200)
    assert.equal(app.status, 'offline')
    assert.deepEqual(app.scopes, ['device.read'])
    assert.deepEqual(app.resources, { products: [product.productKey], devices: [], regions: [], dataModels: [], eventTypes: [], topics: [] })
    // The status filter finds it among the offline apps only.
    const offline = await api.expect('GET', '/api/v1/apps?status=offline', undefined, 200)
    assert.deepEqual(offline.items.map((a) => a.clientId), [shown.clientId])
    await shot('list')
  })

  test('rotate the secret after confirming, then delete the app after confirming', async () => {
    await page.locator(`[data-test="app-rotate-${APP}"]`).click()
    await page.locator('.el-message-box__btns .el-button--primary').click()
    const dialog = page.locator('.el-dialog:visible', { hasText: 'Client ID' })
    await dialog.waitFor()
    const rotated = (await page.locator('[data-test="secret-密钥"]:visible').innerText()).trim()
    assert.match(rotated, /^[A-Za-z0-9]{40}$/)
    assert.notEqual(rotated, shown.secret)
    await page.locator('[data-test=secret-close]:visible').click()
    await dialog.waitFor({ state: 'hidden' })

    await page.locator(`[data-test="app-delete-${APP}"]`).click()
    await page.locator('.el-message-box__btns .el-button--primary').click()
    await toast('success', '已删除')
    await page.locator('[data-test=app-table] .el-table__empty-text').waitFor()
    await api.expect('GET', `/api/v1/apps/${shown.clientId}`, undefined, 404)
  })

  test('grant an MQTT topic to publish with the keyboard; saved as an object and shown again', async () => {
    const pk = product.productKey
    const update = `/${pk}/+/user/update`
    const all = `/${pk}/+/user/all/#`
    const get = `/${pk}/+/user/get`
    const NAME = 'Lighting control'
    // Grants of both forms made through the API.
    const app = await api.expect(
      'POST',
      '/api/v1/apps',
      { name: NAME, type: 'service', resources: { topics: [update, { filter: all, actions: ['publish', 'subscribe'] }] } },
      201,
    )
    await page.goto(`${node.url}/config?tab=registry`)
    await page.locator(`[data-test="app-edit-${NAME}"]`).click()
    await page.locator('[data-test=app-topic-row-1]').waitFor()
    const box = (action, i) => page.locator(`[data-test="app-topic-${action}-${i}"] input[type=checkbox]`)
    const state = async (i) => [await field(`app-topic-${i}`).inputValue(), await box('subscribe', i).isChecked(), await box('publish', i).isChecked()]
    assert.deepEqual(await state(0), [update, true, false])
    assert.deepEqual(await state(1), [all, true, true])

    // Add a row with the keyboard: the new filter field takes the focus; subscribe is ticked.
    await page.locator('[data-test=app-topic-add]').focus()
    await page.keyboard.press('Enter')
    await page.waitForFunction(() => document.activeElement?.id === 'app-topic-2')
    assert.deepEqual(await state(2), ['', true, false])
    await page.keyboard.type(get)
    await page.keyboard.press('Tab')
    assert.equal(await box('subscribe', 2).evaluate((e) => e === document.activeElement), true)
    await page.keyboard.press('Space')
    await page.keyboard.press('Tab')
    assert.equal(await box('publish', 2).evaluate((e) => e === document.activeElement), true)
    await page.keyboard.press('Space')
    assert.deepEqual(await state(2), [get, false, true])
    await shot('topics')
    await page.locator('[data-test=app-submit]').click()
    await toast('success', NAME)
    await page.locator('[data-test=app-dialog]').waitFor({ state: 'hidden' })

    // The server holds the subscribe-only grant as its bare filter, the others as objects.
    const saved = await api.expect('GET', `/api/v1/apps/${app.clientId}`, undefined, 200)
    assert.deepEqual(saved.resources.topics, [update, { filter: all, actions: ['subscribe', 'publish'] }, { filter: get, actions: ['publish'] }])

    // Reopened, each row shows what it grants.
    await page.locator(`[data-test="app-edit-${NAME}"]`).click()
    await page.locator('[data-test=app-topic-row-2]').waitFor()
    assert.deepEqual(await state(0), [update, true, false])
    assert.deepEqual(await state(1), [all, true, true])
    assert.deepEqual(await state(2), [get, false, true])

    // A filter granting nothing is pointed at, not saved.
    await box('publish', 2).focus()
    await page.keyboard.press('Space')
    await page.locator('[data-test=app-submit]').click()
    assert.match(await toast('error', '主题授权 3'), /订阅、发布/)
    assert.deepEqual((await api.expect('GET', `/api/v1/apps/${app.clientId}`, undefined, 200)).resources.topics, saved.resources.topics)
    await page.locator('[data-test=app-dialog] .el-dialog__footer .el-button').first().click()
    await page.locator('[data-test=app-dialog]').waitFor({ state: 'hidden' })
  })
})
