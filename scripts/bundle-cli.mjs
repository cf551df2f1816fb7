// Bundles the compiled command line (dist/cli.js) with the modules it loads at start into
// dist/cli.bundle.js, the file bin/copilot-bridge.js runs. V8 keeps the source text of every
// module it loaded: some 300 files of zod, yaml, pino and prom-client held ~4 MB more of an idle
// bridge's memory than one minified bundle, and took ~100 ms longer to load.
// Modules loaded on first use stay in chunks of their own (dist/chunks/), loaded only then; the
// packages loaded on first use stay outside, as installed. Source maps lead back to src/.
import { rmSync } from 'node:fs';
import { build } from 'esbuild';

/** Loaded only when a feature needs them: an upstream request, express's routes, JWT, Redis limits, GPUs without nvidia-smi. */
const LOADED_ON_FIRST_USE = ['undici', 'express', 'jose', 'ioredis', 'systeminformation'];
/** pino starts these by file path in a worker thread (log transports): they cannot live in a bundle. */
const LOADED_BY_PATH = ['thread-stream', 'pino-pretty'];

rmSync('dist/chunks', { recursive: true, force: true });
await build({
  entryPoints: ['dist/cli.js'],
  outdir: 'dist',
  entryNames: '[name].bundle',
  chunkNames: 'chunks/[name]-[hash]',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  minify: true,
  // No keepNames: it names every function as it is created, on the request path too (~18 µs of
  // CPU per proxied request). The bridge's errors carry their names in `name`.
  sourcemap: true,
  external: [...LOADED_ON_FIRST_USE, ...LOADED_BY_PATH],
  // The CommonJS packages in the bundle call require(); an ES module has none of its own.
  banner: { js: "import { createRequire as bundleRequire } from 'node:module'; const require = bundleRequire(import.meta.url);" },
  logLevel: 'warning',
});
