// Loads clients/js/ymesh-commands.mjs for the tests. The helper imports `yjs` and `lib0` as a
// user's app would; it lives outside this package, so its bare imports are resolved from
// this package's node_modules (the same yjs instance the tests use).
import { register } from 'node:module'

const clientsDir = new URL('../../../clients/js/', import.meta.url).href
register('data:text/javascript,' + encodeURIComponent(`
  export async function resolve (specifier, context, next) {
    if (context.parentURL?.startsWith(${JSON.stringify(clientsDir)}) &&
        !specifier.startsWith('.') && !specifier.startsWith('/') && !specifier.includes(':')) {
      return next(specifier, { ...context, parentURL: ${JSON.stringify(import.meta.url)} })
    }
    return next(specifier, context)
  }`))

export const commands = await import(new URL('ymesh-commands.mjs', clientsDir))
