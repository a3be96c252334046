import { createRouter, createWebHistory } from 'vue-router'
import { currentSession } from '@/api/http'

declare module 'vue-router' {
  interface RouteMeta {
    /** Reachable without logging in. */
    public?: boolean
    /** The i18n key of the page's title. */
    title?: string
  }
}

// Every page is its own chunk: the log-in page loads none of the products or charts code.
export const router = createRouter({
  history: createWebHistory(),
  routes: [
    { path: '/login', name: 'login', component: () => import('@/views/LoginView.vue'), meta: { public: true, title: 'login.title' } },
    // An app's OpenID Connect sign-in request, sent here by GET /oauth2/authorize. Public for
    // prompt=none (the page itself logs the user in for other requests).
    { path: '/authorize', name: 'authorize', component: () => import('@/views/AuthorizeView.vue'), meta: { public: true, title: 'authorize.title' } },
    // The end of an app's logout, sent here by GET /oauth2/logout.
    { path: '/logout-complete', name: 'logout-complete', component: () => import('@/views/LogoutCompleteView.vue'), meta: { public: true, title: 'logoutComplete.title' } },
    {
      path: '/',
      component: () => import('@/layouts/ShellLayout.vue'),
      children: [
        { path: '', redirect: { name: 'tasks' } },
        { path: 'me', name: 'me', component: () => import('@/views/PersonalView.vue'), meta: { title: 'nav.personal' } },
        { path: 'tasks', name: 'tasks', component: () => import('@/views/TasksView.vue'), meta: { title: 'nav.tasks' } },
        { path: 'messages', name: 'messages', component: () => import('@/views/MessagesView.vue'), meta: { title: 'nav.messages' } },
        { path: 'apps', name: 'apps', component: () => import('@/views/AppsView.vue'), meta: { title: 'nav.apps' } },
        { path: 'config', name: 'config', component: () => import('@/views/ConfigView.vue'), meta: { title: 'nav.config' } },
        { path: 'products', name: 'products', component: () => import('@/views/ProductsView.vue'), meta: { title: 'nav.products' } },
        { path: 'products/:pk', name: 'product', component: () => import('@/views/ProductDetailView.vue'), props: true, meta: { title: 'nav.products' } },
        { path: 'devices', name: 'devices', component: () => import('@/views/DevicesView.vue'), meta: { title: 'nav.devices' } },
        { path: 'devices/:pk/:dn', name: 'device', component: () => import('@/views/DeviceDetailView.vue'), props: true, meta: { title: 'nav.devices' } },
        { path: ':rest(.*)*', name: 'not-found', component: () => import('@/views/NotFoundView.vue'), meta: { title: 'notFound.title' } },
      ],
    },
  ],
})

/**
 * Whether a URL fragment hands over a session: `GET /api/v1/auth/oidc/callback` sends the
 * browser to `/login#token=…` after a log-in through the city's identity provider.
 */
export function handsOverSession(hash: string): boolean {
  return new URLSearchParams(hash.replace(/^#/, '')).has('token')
}

router.beforeEach((to) => {
  if (!to.meta.public && !currentSession()) {
    return { name: 'login', query: to.fullPath === '/' ? {} : { redirect: to.fullPath } }
  }
  // Someone logged in has no business on the log-in page, unless it brings a session from the
  // identity provider: that log-in was asked for in this browser and replaces the one held
  // (which may be another user's), so the page must get to take it.
  if (to.name === 'login' && currentSession() && !handsOverSession(to.hash)) return { path: '/' }
  return true
})
