// Bundles the compiled command line (dist/cli.js) with the modules it loads at start into
// dist/cli.bundle.js, the file bin/copilot-bridge.js runs. V8 keeps the source text of every
// module it loaded: some 300 files of zod, yaml, pino and prom-client held ~4 MB more of an idle
// bridge's memory than one minified bundle, and took ~100 ms longer to load.
// Modules loaded on first use stay in chunks of their own (dist/chunks/), loaded only then; the
// packages loaded on first use stay outside, as installed. Source maps lead back to src/.
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { build } from 'esbuild';

/** Loaded only when a feature needs them: an upstream request, express's routes, JWT, Redis limits, GPUs without nvidia-smi. */
const LOADED_ON_FIRST_USE = ['undici', 'express', 'jose', 'ioredis', 'systeminformation'];
/** pino's log transports, which the bridge does not use, run these by file path in a worker thread. */
const LOADED_BY_PATH = ['thread-stream', 'pino-pretty'];
const CHUNKS = 'dist/chunks';
/** The chunks of the last build: a bridge started from it loads them on first use, after a rebuild too. */
const LAST_BUILD = path.join(CHUNKS, 'last-build.json');

const lastBuild = existsSync(LAST_BUILD) ? JSON.parse(readFileSync(LAST_BUILD, 'utf8')) : [];
const { metafile } = await build({
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
  // CPU per proxied request). The log names errors by their `name` (src/log.ts).
  sourcemap: true,
  external: [...LOADED_ON_FIRST_USE, ...LOADED_BY_PATH],
  // The CommonJS packages in the bundle call require(); an ES module has none of its own.
  banner: { js: "import { createRequire as bundleRequire } from 'node:module'; const require = bundleRequire(import.meta.url);" },
  logLevel: 'warning',
  metafile: true,
});
// Chunk names carry a hash of their content: older ones would pile up build after build.
const thisBuild = Object.keys(metafile.outputs)
  .filter((file) => path.dirname(file) === CHUNKS)
  .map((file) => path.basename(file));
const kept = new Set([...thisBuild, ...lastBuild, path.basename(LAST_BUILD)]);
for (const file of readdirSync(CHUNKS)) if (!kept.has(file)) rmSync(path.join(CHUNKS, file));
writeFileSync(LAST_BUILD, JSON.stringify(thisBuild));
