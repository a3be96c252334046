import { defineStore } from 'pinia'
import { ref } from 'vue'
import { get, put } from '@/api/http'
import type { PlatformStyle } from '@/api/types'
import { applyThemeColor, DEFAULT_THEME } from '@/theme'

const DEFAULTS: PlatformStyle = { title: 'Lotus', themeColor: DEFAULT_THEME, logo: null, loginBackground: null }

/** The platform style (title, logo, log-in background, theme colour), readable before log-in. */
export const useStyleStore = defineStore('style', () => {
  const style = ref<PlatformStyle>({ ...DEFAULTS })
  const loaded = ref(false)

  function apply(s: PlatformStyle) {
    style.value = { ...DEFAULTS, ...s }
    applyThemeColor(style.value.themeColor)
    document.title = style.value.title
  }

  async function load() {
    try {
      apply(await get<PlatformStyle>('/api/v1/style', { anonymous: true }))
    } catch {
      // A node without the style endpoint (or not reachable yet) shows the defaults.
      apply(style.value)
    }
    loaded.value = true
  }

  async function save(s: PlatformStyle) {
    apply(await put<PlatformStyle>('/api/v1/style', s))
  }

  return { style, loaded, load, save, apply }
})
