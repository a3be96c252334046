import { createApp } from 'vue'
import { createPinia } from 'pinia'
import App from './App.vue'
import { router } from './router'
import { i18n } from './i18n'
import { whenUnauthorized } from './api/http'
import { useAuthStore } from './stores/auth'
import { useStyleStore } from './stores/style'
import './styles.css'
// Services called from scripts (ElMessage, ElMessageBox) bring no CSS through the component
// resolver; import theirs once.
import 'element-plus/es/components/message/style/css'
import 'element-plus/es/components/message-box/style/css'

const app = createApp(App)
app.use(createPinia())
app.use(i18n)
app.use(router)

const auth = useAuthStore()
whenUnauthorized(() => {
  auth.forget()
  const here = router.currentRoute.value
  if (!here.meta.public) router.replace({ name: 'login', query: { redirect: here.fullPath } })
})
useStyleStore().load()
if (auth.loggedIn) auth.loadMe()

app.mount('#app')
