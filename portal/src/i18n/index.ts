import { createI18n } from 'vue-i18n'
import zhCN from './zh-CN'
import en from './en'

export type Locale = 'zh-CN' | 'en'
export const LOCALES: { code: Locale; label: string }[] = [
  { code: 'zh-CN', label: '简体中文' },
  { code: 'en', label: 'English' },
]

const KEY = 'lotus.locale'

function initial(): Locale {
  const saved = localStorage.getItem(KEY)
  return saved === 'en' || saved === 'zh-CN' ? saved : 'zh-CN'
}

export const i18n = createI18n({
  legacy: false,
  locale: initial(),
  fallbackLocale: 'zh-CN',
  messages: { 'zh-CN': zhCN, en },
})

document.documentElement.lang = i18n.global.locale.value

export function setLocale(l: Locale) {
  i18n.global.locale.value = l
  localStorage.setItem(KEY, l)
  document.documentElement.lang = l
}

/** A Unix-ms time in the reader's language; '—' when absent. */
export function fmtTime(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return '—'
  return new Intl.DateTimeFormat(i18n.global.locale.value, {
    dateStyle: 'short',
    timeStyle: 'medium',
  }).format(new Date(ms))
}
