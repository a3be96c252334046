// Browser tests of the config center's regions, organisations, users and roles against the real
// `lotus` binary (Debian's chromium driven by playwright-core): what an administrator does with
// the keyboard and mouse, checked against the API afterwards.
//
//   npm test                       # builds dist/ first when it is stale
//
// Screenshots go to portal/test-results/identity-*.png.

import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { PORTAL, ADMIN_PASSWORD, apiClient, ensureBuilt, startLotus, stopLotus, launchBrowser } from './lotus.mjs'

const RESULTS = join(PORTAL, 'test-results')

let node
let api
let context
let page
let profile

async function shot(name) {
  await page.screenshot({ path: join(RESULTS, `identity-${name}.png`), fullPage: true })
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

before(async () => {
  ensureBuilt()
  mkdirSync(RESULTS, { recursive: true })
  node = await startLotus()
  api = apiClient(node.http)
  await api.login()
  ;({ context, page, profile } = await launchBrowser({ locale: 'zh-CN', name: 'identity' }))
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

describe('config center: identity', () => {
  test('create a region tree with the keyboard', async () => {
    await page.goto(`${node.url}/config?tab=regions`)
    await page.locator('[data-test=region-add]').click()
    await field('region-path').fill('/hz')
    await field('region-name').fill('杭州市')
    await field('region-code').fill('330100')
    // Enter submits the form.
    await page.keyboard.press('Enter')
    await toast('success', '杭州市')
    const hz = page.locator('[data-test="region-node-/hz"]')
    await hz.waitFor()
    // The child's button is a real button: focus it and press Enter.
    await hz.getByRole('button', { name: /添加下级区划/ }).focus()
    await page.keyboard.press('Enter')
    assert.equal(await field('region-path').inputValue(), '/hz/')
    await field('region-path').fill('/hz/xihu')
    await field('region-name').fill('西湖区')
    await field('region-name').press('Enter')
    await toast('success', '西湖区')
    await page.locator('[data-test="region-node-/hz/xihu"]').waitFor()
    const regions = await api.expect('GET', '/api/v1/regions', undefined, 200)
    assert.deepEqual(
      regions.items.map((r) => [r.path, r.name, r.code]),
      [
        ['/hz', '杭州市', '330100'],
        ['/hz/xihu', '西湖区', null],
      ],
    )
    await shot('regions')
  })

  test('a region with something in it is not deleted, and the reason is shown', async () => {
    await page.locator('[data-test="region-delete-/hz"]').click()
    await page.locator('.el-message-box__btns .el-button--primary').click()
    const said = await toast('error', 'sub-region')
    assert.match(said, /1 sub-region\(s\)/)
    assert.equal((await api.expect('GET', '/api/v1/regions', undefined, 200)).items.length, 2)
  })

  test('create a custom role with the permission picker', async () => {
    await page.goto(`${node.url}/config?tab=roles`)
    await page.locator('[data-test=role-table]', { hasText: 'security_admin' }).waitFor()
    await page.locator('[data-test=role-add]').click()
    await field('role-name').fill('inspector')
    await field('role-description').fill('现场巡检')
    await page.locator('.el-select[data-test=role-permissions], [data-test=role-permissions]').first().click()
    await page.keyboard.type('device.re')
    await page.locator('.el-select-dropdown__item:visible', { hasText: 'device.read' }).first().click()
    // Closes the picker's list (Escape would close the whole dialog).
    await page.locator('.el-dialog__title:visible').click()
    await page.locator('[data-test=role-submit]').click()
    await toast('success', 'inspector')
    await page.locator('[data-test=role-table]', { hasText: 'inspector' }).waitFor()
    const role = await api.expect('GET', '/api/v1/roles/inspector', undefined, 200)
    assert.deepEqual(role.permissions, ['device.read'])
    await shot('roles')
  })

  test('create a user in a region picked from the tree, then change their roles', async () => {
    await page.goto(`${node.url}/config?tab=users`)
    await page.locator('[data-test=user-table]', { hasText: 'admin' }).waitFor()
    await page.locator('[data-test=user-create]').click()
    await field('user-name').fill('ops-xihu')
    await field('user-password').fill('operator-pw-2026')
    // The region field suggests the tree's regions; the keyboard picks one.
    await field('user-region').fill('')
    await field('user-region').pressSequentially('xihu')
    await page.locator('.el-autocomplete-suggestion li:visible', { hasText: '西湖区' }).waitFor()
    await field('user-region').press('ArrowDown')
    await field('user-region').press('Enter')
    assert.equal(await field('user-region').inputValue(), '/hz/xihu')
    await page.locator('[data-test=user-submit]').click()
    await toast('success', 'ops-xihu')
    await page.locator('[data-test=user-table]', { hasText: 'ops-xihu' }).waitFor()
    let users = await api.expect('GET', '/api/v1/users?q=ops-xihu', undefined, 200)
    assert.deepEqual([users.items[0].roles, users.items[0].region], [['operator'], '/hz/xihu'])

    // A region outside the tree is refused with the nearest one that exists.
    await page.locator('[data-test=user-create]').click()
    await field('user-name').fill('lost')
    await field('user-password').fill('operator-pw-2026')
    await field('user-region').fill('/hz/gongshu')
    await page.locator('[data-test=user-submit]').click()
    assert.match(await toast('error', 'nearest'), /nearest existing region is '\/hz'/)
    await page.keyboard.press('Escape')

    await page.locator('[data-test="user-roles-ops-xihu"]').click()
    await page.locator('[data-test=user-edit-roles]').first().click()
    await page.locator('.el-select-dropdown__item:visible', { hasText: 'inspector' }).first().click()
    await page.locator('.el-dialog__title:visible').click()
    await page.locator('[data-test=user-roles-submit]').click()
    await toast('success', 'ops-xihu')
    users = await api.expect('GET', '/api/v1/users?q=ops-xihu', undefined, 200)
    assert.deepEqual(users.items[0].roles, ['inspector', 'operator'])
    const audit = await api.expect('GET', '/api/v1/audit?limit=1000', undefined, 200)
    assert.ok(audit.items.some((e) => e.action === 'user.roles' && e.target === 'user:ops-xihu'))
    await shot('users')
  })

  test("edit a user's region, disable and enable them, and reset their password with the keyboard", async () => {
    await api.expect('POST', '/api/v1/regions', { path: '/hz/binjiang', name: '滨江区' }, 201)
    const ops = apiClient(node.http)
    await ops.login('ops-xihu', 'operator-pw-2026')
    await page.goto(`${node.url}/config?tab=users`)
    await page.locator('[data-test="user-status-ops-xihu"]', { hasText: '正常' }).waitFor()

    // The row's buttons are real buttons: focus one and press Enter.
    await page.locator('[data-test="user-edit-ops-xihu"]').focus()
    await page.keyboard.press('Enter')
    const region = field('user-edit-region')
    await region.waitFor()
    assert.equal(await region.inputValue(), '/hz/xihu')
    await region.fill('')
    await region.pressSequentially('binjiang')
    await page.locator('.el-autocomplete-suggestion li:visible', { hasText: '滨江区' }).waitFor()
    await region.press('ArrowDown')
    await region.press('Enter')
    assert.equal(await region.inputValue(), '/hz/binjiang')
    await field('user-edit-phone').fill('+8613812345678')
    // Enter in a field submits the dialog's form.
    await field('user-edit-phone').press('Enter')
    await toast('success', '已保存用户 ops-xihu')
    let user = await api.expect('GET', '/api/v1/users/ops-xihu', undefined, 200)
    assert.deepEqual([user.region, user.phone, user.org], ['/hz/binjiang', '+8613812345678', ''])
    let audit = await api.expect('GET', '/api/v1/audit?limit=1000', undefined, 200)
    const update = audit.items.find((e) => e.action === 'user.update' && e.target === 'user:ops-xihu')
    assert.deepEqual([update.detail.from.region, update.detail.to.region], ['/hz/xihu', '/hz/binjiang'])

    // Disable, confirmed with the keyboard: the user's session ends at once.
    async function confirmWithKeyboard() {
      const ok = page.locator('.el-message-box:visible .el-message-box__btns .el-button--primary')
      await ok.waitFor()
      await ok.focus()
      await page.keyboard.press('Enter')
    }
    await page.locator('[data-test="user-disable-ops-xihu"]').focus()
    await page.keyboard.press('Enter')
    await confirmWithKeyboard()
    await toast('success', '已停用用户 ops-xihu')
    await page.locator('[data-test="user-status-ops-xihu"]', { hasText: '已停用' }).waitFor()
    const refused = await ops.call('GET', '/api/v1/me')
    assert.equal(refused.status, 401)
    assert.match(refused.data.detail, /disabled/)
    user = await api.expect('GET', '/api/v1/users/ops-xihu', undefined, 200)
    assert.equal(user.disabled, true)
    // The status filter shows the disabled accounts only.
    await page.locator('[data-test=user-status-filter]').click()
    await page.locator('.el-select-dropdown__item:visible', { hasText: '已停用' }).click()
    await page.locator('[data-test="user-enable-ops-xihu"]').waitFor()
    assert.equal(await page.locator('[data-test="user-table"] tbody tr:visible').count(), 1)
    await shot('user-disabled')

    await page.locator('[data-test="user-enable-ops-xihu"]').focus()
    await page.keyboard.press('Enter')
    await confirmWithKeyboard()
    await toast('success', '已启用用户 ops-xihu')
    user = await api.expect('GET', '/api/v1/users/ops-xihu', undefined, 200)
    assert.equal(user.disabled, false)
    await ops.login('ops-xihu', 'operator-pw-2026')

    // Reset the password: the two entries must agree; the old sessions end.
    await page.locator('[data-test=user-status-filter]').click()
    await page.locator('.el-select-dropdown__item:visible', { hasText: '全部' }).click()
    await page.locator('[data-test="user-reset-ops-xihu"]').focus()
    await page.keyboard.press('Enter')
    await field('user-reset-password').fill('given-by-admin-2026')
    await field('user-reset-confirm').fill('given-by-admin-2027')
    await field('user-reset-confirm').press('Enter')
    await page.locator('.el-form-item__error:visible', { hasText: '不一致' }).waitFor()
    await field('user-reset-confirm').fill('given-by-admin-2026')
    await field('user-reset-confirm').press('Enter')
    await toast('success', '已重置 ops-xihu')
    assert.equal((await ops.call('GET', '/api/v1/me')).status, 401)
    const again = await ops.login('ops-xihu', 'given-by-admin-2026')
    assert.equal(again.mustChangePassword, true)
    audit = await api.expect('GET', '/api/v1/audit?limit=1000', undefined, 200)
    const actions = audit.items.filter((e) => e.target === 'user:ops-xihu' && e.action.startsWith('user.')).map((e) => e.action)
    assert.deepEqual(actions.slice(-4), ['user.update', 'user.disable', 'user.enable', 'user.password_reset'])
    assert.equal((await api.expect('GET', '/api/v1/audit/verify', undefined, 200)).intact, true)
    await shot('user-edit')
  })

  test('organisations: a tree with a sub-organisation', async () => {
    await page.goto(`${node.url}/config?tab=orgs`)
    await page.locator('[data-test=org-add]').click()
    await field('org-id').fill('city')
    await field('org-name').fill('市政府')
    await page.locator('[data-test=org-submit]').click()
    await toast('success', '市政府')
    await page.locator('[data-test=org-tree]', { hasText: '市政府' }).getByRole('button', { name: /添加下级组织/ }).click()
    await field('org-id').fill('water')
    await field('org-name').fill('水务集团')
    await page.locator('[data-test=org-submit]').click()
    await toast('success', '水务集团')
    const orgs = await api.expect('GET', '/api/v1/orgs', undefined, 200)
    assert.deepEqual(
      orgs.items.map((o) => [o.id, o.parent]),
      [
        ['city', null],
        ['water', 'city'],
      ],
    )
    await shot('orgs')
  })
})
