// The shapes of the API's JSON (camelCase), as the host's `host/api/src/*.rs` serialise them.

export interface Paged<T> {
  items: T[]
  total: number
  page: number
  pageSize: number
}

export interface LoginResponse {
  token: string
  expiresAt: number
  username: string
  roles: string[]
  /** An administrator set this password: the user is sent to choose their own. */
  mustChangePassword?: boolean
}

export interface Me {
  username: string
  displayName?: string | null
  email?: string | null
  phone?: string | null
  roles: string[]
  org: string
  region: string
  createdAt?: number
}

export interface User {
  id: number
  username: string
  displayName?: string | null
  email?: string | null
  phone?: string | null
  roles: string[]
  org: string
  region: string
  createdAt: number
  /** Disabled by an administrator: no log-in, no session. */
  disabled?: boolean
  disabledAt?: number | null
  /** Locked by failed log-ins until then (absent when not locked now). */
  lockedUntil?: number | null
  mustChangePassword?: boolean
}

export interface PlatformStyle {
  title: string
  themeColor: string
  logo: string | null
  loginBackground: string | null
}

export type NodeType = 'direct' | 'gateway' | 'subdevice'
export type DataFormat = 'alink' | 'custom'

export interface Product {
  productKey: string
  productSecret?: string
  name: string
  nodeType: NodeType
  dataFormat: DataFormat
  dynamicRegistration: boolean
  allowUnregistered: boolean
  replayWindowSecs: number | null
  description: string
  thingModelVersion: number | null
  deviceCount: number
  org: string
  region: string
  createdAt: number
  updatedAt: number
}

export interface ThingModelSaved {
  version: number
  properties: number
  events: number
  services: number
}

export interface ThingModelVersion {
  version: number
  createdAt: number
}

export type TopicOperation = 'pub' | 'sub' | 'all'

export interface TopicClass {
  id: string
  template: string
  operation: TopicOperation
  description: string
  system: boolean
}

export interface Plugin {
  id: string
  world: string
  activeVersion: string
  enabled: boolean
  status: string
  statusReason?: string
}

export type DeviceStatus = 'inactive' | 'online' | 'offline' | 'disabled'

export interface Device {
  productKey: string
  deviceName: string
  nickname: string | null
  status: DeviceStatus
  enabled: boolean
  firstOnlineAt: number | null
  lastOnlineAt: number | null
  lastOfflineAt: number | null
  lastOfflineReason: string | null
  tags: Record<string, unknown>
  region?: string
  createdAt: number
  updatedAt: number
}

export interface DeviceCredentials {
  productKey: string
  deviceName: string
  deviceSecret: string
}

export interface PropertyValue {
  identifier: string
  value: unknown
  time: number
}

export interface HistoryPoint {
  time: number
  value: unknown
}

export interface History {
  identifier: string
  from: number
  to: number
  intervalMs: number | null
  agg: string | null
  points: HistoryPoint[]
}

export interface DeviceEvent {
  identifier: string
  eventType: string
  params: unknown
  time: number
}

export interface Shadow {
  desired: Record<string, unknown>
  reported: Record<string, unknown>
  delta: Record<string, unknown>
  version: number
  desiredUpdatedAt: number | null
  reportedUpdatedAt: number | null
  updatedAt: number
}

export interface StatusChange {
  online: boolean
  reason: string
  at: number
}

export interface Accepted {
  messageId: string
}

export interface ServiceReply {
  messageId: string
  code: number
  data: unknown
  message: string | null
}

export type TaskAssignee =
  | { kind: 'user'; username: string }
  | { kind: 'role'; role: string; org?: string; region?: string }

export type TaskState = 'open' | 'approved' | 'rejected' | 'transferred' | 'cancelled'

export interface Task {
  id: string
  eventId: number
  kind: string
  stepId: string
  stepName: string
  title: string
  assignee: TaskAssignee
  state: TaskState
  overdue: boolean
  dueAt: number | null
  createdAt: number
  closedAt: number | null
  closedBy: string | null
  comment: string | null
}

export interface TimelineEntry {
  seq: number
  at: number
  actor: string | null
  action: string
  detail: unknown
}

export interface EventDetail {
  id: number
  number: string
  type: string
  title: string
  level: number
  state: string
  outcome: string | null
  region: string
  org: string
  fields: Record<string, unknown>
  createdAt: number
  closedAt: number | null
  timeline: TimelineEntry[]
  tasks: Task[]
}

export interface Message {
  id: number
  kind: string
  title: string
  body: string
  level: number | null
  link: string | null
  sender: string | null
  readAt: number | null
  createdAt: number
}

export interface MessagePage extends Paged<Message> {
  unread: number
}

export interface Channel {
  id: string
  kind: string
  config: Record<string, unknown>
  hasSecret: boolean
  pluginId: string | null
  enabled: boolean
  updatedAt: number
}

export interface AppCredential {
  id: number
  name: string
  username: string
  secret?: string
  grants: { filter: string; actions?: string[] }[]
  enabled: boolean
  createdAt: number
  updatedAt: number
}

/** An app the user may open from the app center (`GET /api/v1/me/apps`). */
export interface AppEntry {
  clientId: string
  name: string
  appType: string
  icon: string | null
  url: string | null
  vendor: string | null
  description: string | null
}

/** Whether the log-in page offers the city's identity provider (`GET /api/v1/auth/oidc`). */
export interface OidcLoginStatus {
  enabled: boolean
  label: string
  startUrl: string
}

/** Where the browser goes after `POST /api/v1/oauth2/authorize`. */
export interface AuthorizeRedirect {
  /** The app's redirect URI with a code or an error. */
  redirect?: string
  /** Instead of `redirect`: the password is needed first (`login` or `max_age`). */
  reauthenticate?: 'login' | 'max_age'
}

/** What the end of an app's logout does next. */
export interface EndSession {
  redirect?: string | null
  sessionEnded: boolean
}

/** An administrative region; `parent` is implied by the path (`/` at the top). */
export interface Region {
  path: string
  name: string
  code: string | null
  parent: string
  createdAt: number
  updatedAt: number
}

/** An organisation; `parent` links it into the tree. */
export interface Org {
  id: string
  parent: string | null
  name: string
  region: string | null
  contact: string | null
  createdAt: number
  updatedAt: number
}

/** A built-in or custom role. */
export interface Role {
  name: string
  description: string
  builtIn: boolean
  permissions: string[]
  createdAt: number | null
  updatedAt: number | null
}

export interface RoleList {
  items: Role[]
  /** Every action a custom role may be granted. */
  grantable: string[]
}

export type AppType = 'web' | 'dashboard' | 'mobile' | 'service'
export type AppStatus = 'online' | 'offline'

/** What a registered app is granted besides its API actions (`resources` of an app). */
export interface AppGrants {
  /** Product keys: each product and all its devices. */
  products: string[]
  /** Single devices as `productKey/deviceName`. */
  devices: string[]
  /** Region paths: everything in the region or below it. */
  regions: string[]
  /** Product keys whose readings and thing model the app reads. */
  dataModels: string[]
  eventTypes: string[]
  /** MQTT topic grants: what the app may subscribe and publish to on the broker. */
  topics: TopicGrant[]
}

/** What a topic grant lets an app do with the topics its filter matches. */
export type TopicGrantAction = 'subscribe' | 'publish'

/**
 * One MQTT topic grant of an app: a bare filter grants subscribing (the server answers a
 * subscribe-only grant in this form); the object form names its actions.
 */
export type TopicGrant = string | { filter: string; actions: TopicGrantAction[] }

/** An app of the registry (`/api/v1/apps`); `secret` only in the answers to creation and rotation. */
export interface RegisteredApp {
  id: number
  clientId: string
  secret?: string
  name: string
  type: AppType
  icon: string | null
  url: string | null
  vendor: string | null
  description: string | null
  status: AppStatus
  org: string
  region: string
  /** API actions, `<kind>.<verb>`. */
  scopes: string[]
  resources: AppGrants
  redirectUris: string[]
  openRoles: string[]
  createdAt: number
  updatedAt: number
}
