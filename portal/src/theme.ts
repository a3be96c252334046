// Applies the platform's theme colour through Element Plus's CSS variables, so every component
// (buttons, links, focus rings, the menu) follows at once without a reload.

const HEX = /^#[0-9a-fA-F]{6}$/

export const DEFAULT_THEME = '#1f6feb'

function parse(hex: string): [number, number, number] {
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)) as [number, number, number]
}

function toHex(rgb: number[]): string {
  return '#' + rgb.map((c) => Math.round(Math.max(0, Math.min(255, c))).toString(16).padStart(2, '0')).join('')
}

/** `color` mixed with `other` by `weight` (0 = color, 1 = other), as Element Plus's SCSS does. */
function mix(color: string, other: string, weight: number): string {
  const a = parse(color)
  const b = parse(other)
  return toHex(a.map((c, i) => c * (1 - weight) + b[i]! * weight))
}

export function isThemeColor(c: string): boolean {
  return HEX.test(c)
}

export function applyThemeColor(color: string, root: HTMLElement = document.documentElement) {
  const c = isThemeColor(color) ? color.toLowerCase() : DEFAULT_THEME
  const s = root.style
  s.setProperty('--el-color-primary', c)
  for (const level of [3, 5, 7, 8, 9]) {
    s.setProperty(`--el-color-primary-light-${level}`, mix(c, '#ffffff', level / 10))
  }
  s.setProperty('--el-color-primary-dark-2', mix(c, '#000000', 0.2))
  s.setProperty('--lotus-theme', c)
}
