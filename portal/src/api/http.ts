// One way to call the Lotus REST API: JSON in, JSON out, and every failure an ApiError that
// carries the problem+json `detail` the server wrote for people to read.

export interface Problem {
  type?: string
  title?: string
  status: number
  detail?: string
}

export class ApiError extends Error {
  readonly status: number
  readonly title: string
  readonly detail: string

  constructor(p: Problem) {
    super(p.detail || p.title || `HTTP ${p.status}`)
    this.status = p.status
    this.title = p.title ?? ''
    this.detail = p.detail ?? ''
  }
}

const TOKEN_KEY = 'lotus.session'

export interface Session {
  token: string
  username: string
  roles: string[]
  expiresAt: number
}

let session: Session | null = load()
let onUnauthorized: (() => void) | null = null

function load(): Session | null {
  try {
    const raw = localStorage.getItem(TOKEN_KEY)
    if (!raw) return null
    const s = JSON.parse(raw) as Session
    return s.expiresAt > Date.now() ? s : null
  } catch {
    return null
  }
}

export function currentSession(): Session | null {
  if (session && session.expiresAt <= Date.now()) setSession(null)
  return session
}

export function setSession(s: Session | null) {
  session = s
  if (s) localStorage.setItem(TOKEN_KEY, JSON.stringify(s))
  else localStorage.removeItem(TOKEN_KEY)
}

/** Called when the server says the session is unknown or expired. */
export function whenUnauthorized(f: () => void) {
  onUnauthorized = f
}

export interface RequestOptions {
  /** A raw body (a file's text, YAML) with its content type instead of JSON. */
  raw?: { body: BodyInit; contentType: string }
  /** Do not treat 401 as the end of the session (the log-in call itself). */
  anonymous?: boolean
  signal?: AbortSignal
}

export async function request<T>(
  method: string,
  path: string,
  body?: unknown,
  options: RequestOptions = {},
): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' }
  const s = currentSession()
  if (s && !options.anonymous) headers.Authorization = `Bearer ${s.token}`
  let payload: BodyInit | undefined
  if (options.raw) {
    headers['Content-Type'] = options.raw.contentType
    payload = options.raw.body
  } else if (body !== undefined) {
    headers['Content-Type'] = 'application/json'
    payload = JSON.stringify(body)
  }
  let resp: Response
  try {
    resp = await fetch(path, { method, headers, body: payload, signal: options.signal })
  } catch (e) {
    if ((e as Error).name === 'AbortError') throw e
    throw new ApiError({ status: 0, title: 'Network error', detail: (e as Error).message })
  }
  if (resp.status === 204) return undefined as T
  const text = await resp.text()
  let data: unknown = undefined
  if (text) {
    try {
      data = JSON.parse(text)
    } catch {
      data = text
    }
  }
  if (!resp.ok) {
    const p: Problem =
      data && typeof data === 'object'
        ? { status: resp.status, ...(data as Partial<Problem>) }
        : { status: resp.status, title: resp.statusText, detail: typeof data === 'string' ? data : '' }
    // Only the session the request was made with has ended: one that replaced it meanwhile
    // (a new log-in) stays.
    if (resp.status === 401 && !options.anonymous && s && currentSession() === s) {
      setSession(null)
      onUnauthorized?.()
    }
    throw new ApiError(p)
  }
  return data as T
}

export const get = <T>(path: string, options?: RequestOptions) => request<T>('GET', path, undefined, options)
export const post = <T>(path: string, body?: unknown, options?: RequestOptions) =>
  request<T>('POST', path, body, options)
export const put = <T>(path: string, body?: unknown, options?: RequestOptions) =>
  request<T>('PUT', path, body, options)
export const patch = <T>(path: string, body?: unknown) => request<T>('PATCH', path, body)
export const del = <T = void>(path: string) => request<T>('DELETE', path)

/** `?a=1&b=x` from the defined, non-empty values. */
export function query(params: Record<string, string | number | boolean | undefined | null>): string {
  const q = new URLSearchParams()
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v))
  }
  const s = q.toString()
  return s ? `?${s}` : ''
}

export const enc = encodeURIComponent
