import { ElMessage, ElMessageBox } from 'element-plus'
import { ApiError } from '@/api/http'
import { i18n } from '@/i18n'

/** Shows what went wrong: the API's problem detail, which names the field and the fix. */
export function showError(e: unknown) {
  const t = i18n.global.t
  let text: string
  if (e instanceof ApiError) {
    text = e.status === 0 ? t('common.networkError') : e.detail || e.title || `HTTP ${e.status}`
  } else {
    text = (e as Error)?.message ?? String(e)
  }
  ElMessage({ type: 'error', message: text, showClose: true, duration: 6000 })
}

export function showSuccess(text: string) {
  ElMessage({ type: 'success', message: text })
}

/** Asks before something that cannot be undone; resolves true when confirmed. */
export async function confirmDanger(text: string, title?: string): Promise<boolean> {
  const t = i18n.global.t
  try {
    await ElMessageBox.confirm(text, title ?? t('common.confirm'), {
      type: 'warning',
      confirmButtonText: t('common.ok'),
      cancelButtonText: t('common.cancel'),
    })
    return true
  } catch {
    return false
  }
}
