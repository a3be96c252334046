import { fileURLToPath, URL } from 'node:url'
import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'
import AutoImport from 'unplugin-auto-import/vite'
import Components from 'unplugin-vue-components/vite'
import { ElementPlusResolver } from 'unplugin-vue-components/resolvers'

// `npm run dev` talks to a node started with `lotus serve` (default port 8080); point it
// elsewhere with LOTUS_API=http://127.0.0.1:18080.
const api = process.env.LOTUS_API ?? 'http://127.0.0.1:8080'
const proxy = {
  '/api': { target: api, changeOrigin: false },
}

export default defineConfig({
  plugins: [
    vue(),
    // Element Plus on demand: only the components and their CSS that the pages use.
    AutoImport({
      resolvers: [ElementPlusResolver()],
      dts: 'auto-imports.d.ts',
    }),
    Components({
      resolvers: [ElementPlusResolver()],
      dts: 'components.d.ts',
    }),
  ],
  resolve: {
    alias: { '@': fileURLToPath(new URL('./src', import.meta.url)) },
  },
  server: { proxy },
  preview: { proxy },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    chunkSizeWarningLimit: 700,
    rolldownOptions: {
      output: {
        // The framework changes less often than the pages: its own chunk stays cached across
        // portal updates. Everything else is split by route (the lazy imports in the router).
        codeSplitting: {
          groups: [
            { name: 'vue', test: /node_modules[\\/](@vue|vue|vue-router|pinia|vue-i18n|@intlify)[\\/]/ },
          ],
        },
      },
    },
  },
})
