import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import { currentSession, get, post, setSession, type Session } from '@/api/http'
import type { LoginResponse, Me } from '@/api/types'

export const useAuthStore = defineStore('auth', () => {
  const session = ref<Session | null>(currentSession())
  const me = ref<Me | null>(null)

  const loggedIn = computed(() => session.value !== null)
  const username = computed(() => session.value?.username ?? '')
  const displayName = computed(() => me.value?.displayName || username.value)
  const isAdmin = computed(() => (session.value?.roles ?? []).includes('admin'))

  /** Logs in; true when an administrator set the password and the user must choose their own. */
  async function login(username: string, password: string): Promise<boolean> {
    const r = await post<LoginResponse>('/api/v1/auth/login', { username, password }, { anonymous: true })
    const s: Session = { token: r.token, username: r.username, roles: r.roles, expiresAt: r.expiresAt }
    setSession(s)
    session.value = s
    await loadMe()
    return r.mustChangePassword === true
  }

  async function loadMe() {
    // The session may be replaced while this is under way (a log-in handed over on the log-in
    // page): an answer about the previous user must not be shown as the new one.
    const asked = session.value
    try {
      const m = await get<Me>('/api/v1/me')
      if (session.value === asked) me.value = m
    } catch {
      if (session.value === asked) me.value = null
    }
  }

  async function logout() {
    try {
      await post('/api/v1/auth/logout')
    } catch {
      // The session may already be gone; logging out locally is what matters.
    }
    forget()
  }

  /** Drops the session without asking the server (it already said the token is dead). */
  function forget() {
    setSession(null)
    session.value = null
    me.value = null
  }

  return { session, me, loggedIn, username, displayName, isAdmin, login, loadMe, logout, forget }
})
