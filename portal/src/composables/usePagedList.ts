// One server-side paged list: the page and page size a table shows, the page the server
// answered, a loading flag, and reloading when either changes. Every list view of the portal
// pages on the server (`?page=&pageSize=` → `{items, total, page, pageSize}`), so none of them
// ever holds more than one page.

import { ref, watch, type Ref } from 'vue'
import type { Paged } from '@/api/types'
import { showError } from '@/feedback'

export const PAGE_SIZES = [10, 20, 50, 100]

export interface PagedListOptions<P> {
  /** The page to start on (e.g. from the address bar); 1 by default. */
  page?: number
  /** 20 by default. */
  pageSize?: number
  /** What the list shows before the first answer (a page type may carry more than items). */
  empty?: P
  /** Called with every failure; a toast by default. */
  onError?: (e: unknown) => void
}

export interface PagedList<P> {
  page: Ref<number>
  pageSize: Ref<number>
  /** The last page the server answered. */
  data: Ref<P>
  loading: Ref<boolean>
  /** Fetches the current page again. */
  load: () => Promise<void>
  /** Back to the first page (filters changed), fetching it once. */
  search: () => Promise<void>
}

/**
 * `fetchPage(page, pageSize)` asks the server for one page; the list reloads when the page
 * changes and starts over at page 1 when the page size does.
 */
export function usePagedList<T, P extends Paged<T> = Paged<T>>(
  fetchPage: (page: number, pageSize: number) => Promise<P>,
  options: PagedListOptions<P> = {},
): PagedList<P> {
  const page = ref(options.page ?? 1)
  const pageSize = ref(options.pageSize ?? 20)
  const data = ref(options.empty ?? ({ items: [], total: 0, page: 1, pageSize: pageSize.value } as unknown as P)) as Ref<P>
  const loading = ref(false)
  // Answers can overtake each other; only the newest request's answer is shown.
  let generation = 0

  async function load() {
    const mine = ++generation
    loading.value = true
    try {
      const answer = await fetchPage(page.value, pageSize.value)
      if (mine === generation) data.value = answer
    } catch (e) {
      if (mine === generation) (options.onError ?? showError)(e)
    } finally {
      if (mine === generation) loading.value = false
    }
  }

  async function search() {
    if (page.value === 1) await load()
    else page.value = 1 // the watcher loads it
  }

  watch(page, load)
  watch(pageSize, search)
  return { page, pageSize, data, loading, load, search }
}
