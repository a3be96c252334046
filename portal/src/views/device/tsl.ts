// The parts of a product's TSL (Alink thing model) the device pages use.

export interface TslProperty {
  identifier: string
  name: string
  accessMode?: string
  dataType?: { type?: string; specs?: Record<string, unknown> }
}
export interface TslService {
  identifier: string
  name: string
  callType?: string
  inputData?: { identifier: string; name: string; dataType?: { type?: string } }[]
}
export interface Tsl {
  properties: TslProperty[]
  events: { identifier: string; name: string; type?: string }[]
  services: TslService[]
}

export function readTsl(v: unknown): Tsl {
  const o = (v ?? {}) as Record<string, unknown>
  const arr = <T>(k: string) => (Array.isArray(o[k]) ? (o[k] as T[]) : [])
  return { properties: arr('properties'), events: arr('events'), services: arr('services') }
}

export const NUMERIC = new Set(['int', 'float', 'double', 'bool', 'enum'])

export function unitOf(p: TslProperty | undefined): string {
  const u = p?.dataType?.specs?.unit
  return typeof u === 'string' && u !== '' ? String(p?.dataType?.specs?.unitName ?? u) : ''
}

/** Services an operator may call: the generated `set`/`get` ones are property downlinks. */
export function callableServices(t: Tsl): TslService[] {
  return t.services.filter((s) => s.identifier !== 'set' && s.identifier !== 'get')
}

export function show(v: unknown): string {
  if (v === null || v === undefined) return '—'
  return typeof v === 'object' ? JSON.stringify(v) : String(v)
}
