import { onBeforeUnmount, ref, watch, type Ref } from 'vue'
import { currentSession, enc } from '@/api/http'

export interface LiveProperty {
  identifier: string
  value: unknown
  time: number
}
export interface LiveMessage {
  direction: 'up' | 'down' | string
  topic: string
  payload: string
  /** `utf-8`, or `base64` for binary payloads. */
  encoding?: string
  time: number
}
export interface LiveHandlers {
  property?: (p: LiveProperty) => void
  /** The device's connection at the moment the feed opened. */
  ready?: (s: { status: string; time: number }) => void
  status?: (s: { status: string; reason?: string; time: number }) => void
  lifecycle?: (l: { action: string; time: number }) => void
  shadow?: (s: Record<string, unknown>) => void
  event?: (e: Record<string, unknown>) => void
  message?: (m: LiveMessage) => void
  overflow?: (n: number) => void
}

export type LiveState = 'connecting' | 'live' | 'unavailable'

/**
 * The device's live feed (Server-Sent Events). EventSource cannot send headers, so the session
 * token goes in `access_token`; the browser reconnects by itself after a network error. A node
 * without the feed (an older binary) leaves the state `unavailable`, and the page polls instead.
 */
export function useDeviceLive(pk: Ref<string>, dn: Ref<string>, on: LiveHandlers) {
  const state = ref<LiveState>('connecting')
  let source: EventSource | null = null
  let opened = false

  function parse<T>(e: MessageEvent): T | null {
    try {
      return JSON.parse(e.data) as T
    } catch {
      return null
    }
  }

  function open() {
    close()
    const token = currentSession()?.token
    if (!token) return
    state.value = 'connecting'
    opened = false
    source = new EventSource(`/api/v1/products/${enc(pk.value)}/devices/${enc(dn.value)}/live?access_token=${enc(token)}`)
    source.onopen = () => {
      opened = true
      state.value = 'live'
    }
    source.onerror = () => {
      // Never opened: the route is missing or refused us; do not hammer it.
      if (!opened || source?.readyState === EventSource.CLOSED) {
        close()
        state.value = 'unavailable'
      } else {
        state.value = 'connecting'
      }
    }
    source.addEventListener('property', (e) => {
      const d = parse<LiveProperty | { params?: Record<string, unknown>; time?: number }>(e as MessageEvent)
      if (!d) return
      if ('identifier' in d) on.property?.(d)
      else if (d.params) {
        for (const [identifier, value] of Object.entries(d.params)) on.property?.({ identifier, value, time: d.time ?? Date.now() })
      }
    })
    source.addEventListener('status', (e) => {
      const d = parse<{ status: string; reason?: string; time: number }>(e as MessageEvent)
      if (d) on.status?.(d)
    })
    source.addEventListener('ready', (e) => {
      const d = parse<{ status: string; time: number }>(e as MessageEvent)
      if (d) on.ready?.(d)
    })
    source.addEventListener('lifecycle', (e) => {
      const d = parse<{ action: string; time: number }>(e as MessageEvent)
      if (d) on.lifecycle?.(d)
    })
    source.addEventListener('shadow', (e) => {
      const d = parse<Record<string, unknown>>(e as MessageEvent)
      if (d) on.shadow?.(d)
    })
    // The server closes the feed for good (the session ended, the node stops): reconnecting
    // with the same token would only be refused.
    source.addEventListener('end', () => {
      close()
      state.value = 'unavailable'
    })
    source.addEventListener('event', (e) => {
      const d = parse<Record<string, unknown>>(e as MessageEvent)
      if (d) on.event?.(d)
    })
    source.addEventListener('message', (e) => {
      const d = parse<LiveMessage>(e as MessageEvent)
      if (d) on.message?.(d)
    })
    source.addEventListener('overflow', (e) => {
      const d = parse<{ dropped?: number; count?: number }>(e as MessageEvent)
      on.overflow?.(d?.dropped ?? d?.count ?? 0)
    })
  }

  function close() {
    source?.close()
    source = null
  }

  watch([pk, dn], open, { immediate: true })
  onBeforeUnmount(close)

  return { state, reconnect: open }
}
