// Browser tests of the portal against the real `lotus` binary: Debian's chromium driven by
// playwright-core (no browser download), a simulated Alink device over MQTT.
//
//   npm test                       # builds dist/ first when it is stale
//   LOTUS_BIN=/path/to/lotus npm test
//
// Screenshots of the main pages go to portal/test-results/.

import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { createHmac } from 'node:crypto'
import { mkdirSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import mqtt from 'mqtt'
import { PORTAL, ADMIN_PASSWORD, apiClient, ensureBuilt, startLotus, stopLotus, launchBrowser } from './lotus.mjs'

const RESULTS = join(PORTAL, 'test-results')
const TSL = join(PORTAL, '..', 'tests', 'e2e', 'fixtures', 'street-light.tsl.json')

let node
let api
let context
let page
let profile
/** What this binary offers beyond the routes every node has. */
const has = { style: false, me: false, live: false }
const state = {}

async function shot(name) {
  await page.screenshot({ path: join(RESULTS, `${name}.png`), fullPage: true })
}

/** Element Plus select: open it, then pick the option by its visible text. */
async function choose(selectLocator, optionText) {
  await selectLocator.click()
  await page.locator('.el-select-dropdown__item:visible', { hasText: optionText }).first().click()
}

/** An Element Plus input or textarea by the data-test attribute given to it (which Element
 * Plus puts on the native element). */
function field(name) {
  return page.locator(`input[data-test="${name}"], textarea[data-test="${name}"]`).first()
}

async function expectSuccessToast() {
  await page.locator('.el-message--success').first().waitFor({ timeout: 10_000 })
}

before(async () => {
  ensureBuilt()
  mkdirSync(RESULTS, { recursive: true })
  node = await startLotus()
  console.log(`# lotus ${node.bin} at ${node.http}; portal served by ${node.mode === 'lotus' ? 'lotus (--portal-dir)' : `vite preview at ${node.url} (this binary has no --portal-dir)`}`)
  api = apiClient(node.http)
  await api.login()
  has.style = (await api.call('GET', '/api/v1/style')).status === 200
  has.me = (await api.call('GET', '/api/v1/me')).status === 200
  console.log(`# node offers: style ${has.style}, me ${has.me}`)
  ;({ context, page, profile } = await launchBrowser({ locale: 'zh-CN', name: 'portal' }))
})

after(async () => {
  await context?.close()
  if (profile) rmSync(profile, { recursive: true, force: true })
  await stopLotus(node)
})

describe('portal', () => {
  test('first load of the log-in page (production build, loopback)', async () => {
    const started = Date.now()
    await page.goto(node.url + '/')
    await page.locator('[data-test=login-submit]').waitFor()
    const visible = Date.now() - started
    const nav = await page.evaluate(() => {
      const n = performance.getEntriesByType('navigation')[0]
      const res = performance.getEntriesByType('resource')
      return {
        domContentLoaded: Math.round(n.domContentLoadedEventEnd),
        load: Math.round(n.loadEventEnd),
        resources: res.length,
        bytes: res.reduce((s, r) => s + (r.transferSize || 0), 0),
      }
    })
    console.log(
      `# first load: log-in form visible after ${visible} ms; DOMContentLoaded ${nav.domContentLoaded} ms, ` +
        `load ${nav.load} ms, ${nav.resources} resources, ${Math.round(nav.bytes / 1024)} KiB transferred`,
    )
    // Speed goals live in the benchmarks; this only catches a page that never comes.
    assert.ok(visible < 30_000)
    assert.equal(await page.getAttribute('html', 'lang'), 'zh-CN')
    await shot('01-login')
  })

  test('a wrong password shows the server’s reason', async () => {
    await field('login-username').fill('admin')
    await field('login-password').fill('wrong-password')
    await page.locator('[data-test=login-submit]').click()
    const alert = page.locator('.login-error[role=alert]')
    await alert.waitFor()
    assert.match(await alert.innerText(), /wrong username or password/)
    await field('login-username').fill('')
    await field('login-password').fill('')
  })

  test('log in with the keyboard alone', async () => {
    await field('login-username').focus()
    await page.keyboard.type('admin')
    await page.keyboard.press('Tab')
    // Tab lands on the password field (the show-password eye comes after it).
    assert.equal(await page.evaluate(() => document.activeElement?.getAttribute('type')), 'password')
    await page.keyboard.type(ADMIN_PASSWORD)
    await page.keyboard.press('Enter')
    await page.waitForURL(/\/tasks$/)
    await page.locator('[data-test=nav]').waitFor()
    assert.match(await page.locator('[data-test=user-menu]').innerText(), /admin/)
  })

  test('create a product, import its TSL file and see the API refuse a bad one', async () => {
    await page.locator('[data-test=nav-products]').click()
    await page.waitForURL(/\/products$/)
    await page.locator('[data-test=product-create]').click()
    await field('product-name').fill('Street light')
    await page.locator('[data-test=product-submit]').click()
    const dialog = page.locator('[data-test=secret-dialog]:visible')
    const pk = (await dialog.locator('[data-test="secret-productKey"]').innerText()).trim()
    assert.match(pk, /^a1[A-Za-z0-9]{9}$/)
    assert.ok((await dialog.locator('[data-test="secret-productSecret"]').innerText()).trim().length >= 16)
    await shot('02-product-created')
    await dialog.locator('[data-test=secret-close]').click()
    await page.locator('[data-test=product-table]', { hasText: 'Street light' }).waitFor()
    await shot('03-products')
    state.pk = pk

    // Search by part of the name (any case) once typing pauses; the address keeps it.
    await field('product-search').fill('LIGHT')
    await page.waitForURL(/\/products\?search=LIGHT$/)
    await page.locator('[data-test=product-table] .el-table__row', { hasText: pk }).waitFor()
    // Nonsense finds nothing, and the empty state says what was searched for.
    await field('product-search').fill('no-such-product-xyz')
    await page.locator('[data-test=product-table] .el-table__empty-text', { hasText: 'no-such-product-xyz' }).waitFor()
    assert.equal(await page.locator('[data-test=product-table] .el-table__row').count(), 0)

    await page.goto(`${node.url}/products/${pk}?tab=thing-model`)
    await page.locator('[data-test=tsl-import]').setInputFiles(TSL)
    await page.waitForFunction(() => document.querySelector('textarea[data-test=tsl-text]')?.value.includes('Brightness'))
    await page.locator('[data-test=tsl-save]').click()
    await expectSuccessToast()
    const saved = await api.expect('GET', `/api/v1/products/${pk}/thing-model`, undefined, 200)
    assert.ok(saved.properties.some((p) => p.identifier === 'Brightness'))
    await shot('04-thing-model')

    // A property of an unknown data type: the API's problem+json detail is shown as it is.
    await field('tsl-text').fill(
      JSON.stringify({ properties: [{ identifier: 'x', name: 'x', accessMode: 'r', dataType: { type: 'nonsense' } }], events: [], services: [] }),
    )
    await page.locator('[data-test=tsl-save]').click()
    const error = page.locator('[data-test=tsl-error]')
    await error.waitFor()
    assert.match(await error.innerText(), /invalid thing model/)
    // Bad JSON never reaches the API.
    await field('tsl-text').fill('{"properties": [')
    await page.locator('[data-test=tsl-json-error]').waitFor()
    assert.equal(await page.locator('[data-test=tsl-save]').isDisabled(), true)
  })

  test('create a device; its secret is shown once', async () => {
    await page.goto(`${node.url}/devices?productKey=${state.pk}`)
    await page.locator('[data-test=device-create]').click()
    await field('device-name').fill('lamp-0001')
    await page.locator('[data-test=device-submit]').click()
    const dialog = page.locator('[data-test=secret-dialog]:visible')
    state.secret = (await dialog.locator('[data-test="secret-deviceSecret"]').innerText()).trim()
    assert.ok(state.secret.length >= 16, state.secret)
    assert.equal((await dialog.locator('[data-test="secret-deviceName"]').innerText()).trim(), 'lamp-0001')
    await dialog.locator('[data-test=secret-close]').click()
    await page.locator('[data-test=device-table]', { hasText: 'lamp-0001' }).waitFor()
    // The multi-dimension search goes to the server: a name that matches nothing empties the list.
    await field('device-filter-name').fill('no-such-lamp')
    await page.locator('[data-test=device-search]').click()
    await page.locator('[data-test=device-table] .el-table__empty-text').waitFor()
    await field('device-filter-name').fill('lamp')
    await page.locator('[data-test=device-search]').click()
    await page.locator('[data-test=device-table]', { hasText: 'lamp-0001' }).waitFor()
    await shot('05-devices')
  })

  test('search devices by region and by tag', async () => {
    await api.expect('POST', `/api/v1/products/${state.pk}/devices`, { deviceName: 'lamp-west', region: '/hz/xihu' }, 201)
    await api.expect('PATCH', `/api/v1/products/${state.pk}/devices/lamp-west`, { tags: { group: 'north' } }, 200)
    await page.goto(`${node.url}/devices`)
    const table = page.locator('[data-test=device-table]')
    await table.locator('text=lamp-0001').waitFor()
    const region = page.locator('[data-test=device-filter-region] input')
    await region.fill('/hz/xihu')
    await region.press('Escape')
    await page.locator('[data-test=device-search]').click()
    await table.locator('text=lamp-west').waitFor()
    await table.locator('text=lamp-0001').waitFor({ state: 'detached' })
    assert.match(page.url(), /region=%2Fhz%2Fxihu|region=\/hz\/xihu/)
    await region.fill('')
    await field('device-filter-tag').fill('group:south')
    await page.locator('[data-test=device-search]').click()
    await table.locator('.el-table__empty-text').waitFor()
    await field('device-filter-tag').fill('group:north')
    await page.locator('[data-test=device-search]').click()
    await table.locator('text=lamp-west').waitFor()
    assert.equal(await table.locator('text=lamp-0001').count(), 0)
    await field('device-filter-tag').fill('')
    await page.locator('[data-test=device-search]').click()
    await table.locator('text=lamp-0001').waitFor()
  })

  test('a simulated device comes online and its property updates live', async () => {
    await page.goto(`${node.url}/devices/${state.pk}/lamp-0001`)
    const status = page.locator('[data-test=device-status]')
    await status.waitFor()
    assert.equal(await status.getAttribute('data-status'), 'inactive')
    // Which way the page follows the device: the SSE feed, or polling on an older node.
    await page.waitForFunction(() => document.querySelector('[data-test=live-state]')?.getAttribute('data-state') !== 'connecting', null, { timeout: 10_000 }).catch(() => {})
    has.live = (await page.locator('[data-test=live-state]').getAttribute('data-state')) === 'live'
    console.log(`# live feed: ${has.live ? 'SSE' : 'not offered by this node (page polls)'}`)

    const ts = String(Date.now())
    const id = 'lamp-0001'
    const password = createHmac('sha256', state.secret)
      .update(`clientId${id}deviceName${id}productKey${state.pk}timestamp${ts}`)
      .digest('hex')
    const device = await mqtt.connectAsync(`mqtt://${node.mqtt.host}:${node.mqtt.port}`, {
      clientId: `${id}|securemode=3,signmethod=hmacsha256,timestamp=${ts}|`,
      username: `${id}&${state.pk}`,
      password,
      protocolVersion: 4,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
    })
    try {
      await page.waitForFunction(() => document.querySelector('[data-test=device-status]')?.getAttribute('data-status') === 'online', null, { timeout: 15_000 })
      const topic = `/sys/${state.pk}/${id}/thing/event/property/post`
      await device.publishAsync(topic, JSON.stringify({ id: '1', version: '1.0', params: { Brightness: 42 }, method: 'thing.event.property.post' }), { qos: 1 })
      await page.waitForFunction(() => document.querySelector('[data-test=prop-Brightness]')?.textContent?.trim() === '42', null, { timeout: 15_000 })
      await device.publishAsync(topic, JSON.stringify({ id: '2', version: '1.0', params: { Brightness: 77, Current: 1.25 }, method: 'thing.event.property.post' }), { qos: 1 })
      await page.waitForFunction(() => document.querySelector('[data-test=prop-Brightness]')?.textContent?.trim() === '77', null, { timeout: 15_000 })
      await shot('06-device-live')

      await page.goto(`${node.url}/devices/${state.pk}/${id}?tab=history`)
      await page.locator('[data-test=history-chart] canvas').waitFor()
      await shot('07-device-history')

      if (has.live) {
        await page.goto(`${node.url}/devices/${state.pk}/${id}?tab=debug`)
        await page.waitForFunction(() => document.querySelector('[data-test=live-state]')?.getAttribute('data-state') === 'live')
        await device.publishAsync(topic, JSON.stringify({ id: '3', version: '1.0', params: { Brightness: 12 }, method: 'thing.event.property.post' }), { qos: 1 })
        await page.locator('[data-test=message-log]', { hasText: 'thing/event/property/post' }).waitFor()
        await shot('08-device-debug')
      }
    } finally {
      await device.endAsync()
    }
  })

  test('change the theme colour: applied at once, kept after a reload', { skip: false }, async (t) => {
    await page.goto(`${node.url}/config?tab=style`)
    const input = field('style-color')
    await input.fill('#d93025')
    const primary = () => page.evaluate(() => getComputedStyle(document.documentElement).getPropertyValue('--el-color-primary').trim())
    // Previewed while chosen…
    await page.waitForFunction(() => getComputedStyle(document.documentElement).getPropertyValue('--el-color-primary').trim() === '#d93025')
    if (!has.style) {
      t.skip('this node has no PUT /api/v1/style yet: only the preview was checked')
      return
    }
    await field('style-title').fill('Lotus 城市物联网')
    await page.locator('input[type=file][data-test=style-logo]').setInputFiles(join(PORTAL, 'public', 'favicon.svg'))
    await page.locator('.style-form img.preview.logo').waitFor()
    await page.locator('[data-test=style-save]').click()
    await expectSuccessToast()
    // …saved for everyone, and applied again on the next visit (the log-in page too).
    const style = await api.expect('GET', '/api/v1/style', undefined, 200)
    assert.equal(style.themeColor, '#d93025')
    assert.match(style.logo ?? '', /^data:image\/svg\+xml;base64,/)
    // Components follow the variable at once (the brand title is drawn in the primary colour).
    const title = await page.locator('[data-test=shell-title]').evaluate((e) => getComputedStyle(e).color)
    assert.equal(title, 'rgb(217, 48, 37)')
    await shot('09-config-style')
    await page.reload()
    await page.locator('[data-test=shell-title]', { hasText: 'Lotus 城市物联网' }).waitFor()
    assert.equal(await primary(), '#d93025')
  })

  test('approve a task from the task center', async () => {
    // An event type, a workflow whose one step is the administrator's, and an event reported by
    // an operator: the step becomes the admin's task (and a message).
    await api.expect('PUT', '/api/v1/event-types/streetlight.out', {
      code: 'streetlight.out', name: 'Street light out', description: '', defaultLevel: 3, fields: [],
      merge: { windowSecs: 60, radiusMeters: 50 },
    }, 201).catch(async () => api.expect('PUT', '/api/v1/event-types/streetlight.out', {
      code: 'streetlight.out', name: 'Street light out', description: '', defaultLevel: 3, fields: [],
      merge: { windowSecs: 60, radiusMeters: 50 },
    }, 200))
    const workflow = [
      'id: streetlight-approve',
      'name: Approve the repair',
      'version: 1',
      'appliesTo: { eventType: streetlight.out }',
      'start: approve',
      'steps:',
      '  - id: approve',
      '    name: Approve the repair order',
      '    assignee: { user: admin }',
      '    next: end',
      '',
    ].join('\n')
    await api.expect('POST', '/api/v1/workflows', workflow, 201, { contentType: 'application/yaml' })
    const reported = await api.expect('POST', '/api/v1/events', { type: 'streetlight.out', title: 'Lamp 0001 is dark', level: 2, region: '/' }, 201)
    assert.equal(reported.outcome, 'created', JSON.stringify(reported))

    await page.goto(`${node.url}/tasks`)
    const link = page.locator('[data-test=task-table] .el-link', { hasText: 'Approve the repair order' }).first()
    await link.waitFor({ timeout: 15_000 }).catch(async () => {
      // The task is created just after the event's workflow starts.
      await page.waitForTimeout(1000)
      await page.reload()
      await link.waitFor()
    })
    await shot('10-tasks')
    await link.click()
    const detail = page.locator('[data-test=task-detail]')
    await detail.waitFor()
    await shot('11-task-detail')
    await field('task-comment').fill('同意维修')
    await page.locator('[data-test=task-submit]').click()
    await expectSuccessToast()
    const tasks = await api.expect('GET', '/api/v1/tasks?state=approved', undefined, 200)
    assert.ok(tasks.items.some((t) => t.stepId === 'approve' && t.closedBy === 'admin' && t.comment === '同意维修'), JSON.stringify(tasks))
  })

  test('message center: read and mark many', async () => {
    await page.goto(`${node.url}/messages`)
    await page.locator('[data-test=message-table]').waitFor()
    const page1 = await api.expect('GET', '/api/v1/messages', undefined, 200)
    if (page1.items.length) {
      await page.locator('[data-test=message-table] .el-table__header .el-checkbox').click()
      await page.locator('[data-test=messages-mark-read]').click()
      await expectSuccessToast()
      const after = await api.expect('GET', '/api/v1/messages', undefined, 200)
      assert.equal(after.unread, 0)
    }
    await shot('12-messages')
  })

  test('personal center', async (t) => {
    await page.goto(`${node.url}/me`)
    if (!has.me) {
      t.skip('this node has no /api/v1/me yet')
      await shot('13-personal')
      return
    }
    await field('me-email').fill('admin@city.example')
    await page.locator('[data-test=me-save]').click()
    await expectSuccessToast()
    const me = await api.expect('GET', '/api/v1/me', undefined, 200)
    assert.equal(me.email, 'admin@city.example')
    await shot('13-personal')
  })

  test('app center and config center render', async () => {
    await page.goto(`${node.url}/apps`)
    await page.locator('[data-test=apps-empty]').waitFor()
    await shot('14-apps')
    await page.goto(`${node.url}/config?tab=users`)
    await page.locator('.el-table', { hasText: 'admin' }).first().waitFor()
    await page.locator('[data-test=user-create]').click()
    await field('user-name').fill('dispatch-xihu')
    await field('user-password').fill('dispatcher-pw-2026')
    await field('user-region').fill('/hz/xihu')
    await page.locator('[data-test=user-submit]').click()
    await expectSuccessToast()
    await page.locator('.el-table', { hasText: 'dispatch-xihu' }).first().waitFor()
    const users = await api.expect('GET', '/api/v1/users', undefined, 200)
    const created = users.items.find((u) => u.username === 'dispatch-xihu')
    assert.deepEqual([created.roles, created.region], [['operator'], '/hz/xihu'])
    await shot('15-config-users')
  })

  test('switch the language to English and back', async () => {
    await page.goto(`${node.url}/tasks`)
    await page.locator('[data-test=nav-tasks]', { hasText: '任务中心' }).waitFor()
    await choose(page.locator('.el-header [data-test=locale-switch]'), 'English')
    await page.locator('[data-test=nav-tasks]', { hasText: 'Task center' }).waitFor()
    assert.equal(await page.getAttribute('html', 'lang'), 'en')
    // Element Plus's own texts follow (the pager's "Total").
    await page.locator('.el-pagination__total', { hasText: 'Total' }).waitFor()
    await page.locator('.el-select-dropdown:visible').waitFor({ state: 'hidden' }).catch(() => {})
    await shot('16-tasks-english')
    // Kept across a reload.
    await page.reload()
    await page.locator('[data-test=nav-tasks]', { hasText: 'Task center' }).waitFor()
    await choose(page.locator('.el-header [data-test=locale-switch]'), '简体中文')
    await page.locator('[data-test=nav-tasks]', { hasText: '任务中心' }).waitFor()
  })

  test('log out', async () => {
    await page.locator('[data-test=user-menu]').click()
    await page.locator('[data-test=logout]:visible').click()
    await page.waitForURL(/\/login/)
    if (has.style) {
      // The log-in page wears the platform style: title, logo and theme colour.
      await page.locator('[data-test=login-title]', { hasText: 'Lotus 城市物联网' }).waitFor()
      await page.locator('[data-test=login-logo]').waitFor()
      await shot('17-login-styled')
    }
    await page.goto(`${node.url}/devices`)
    await page.waitForURL(/\/login\?redirect=/)
  })
})
