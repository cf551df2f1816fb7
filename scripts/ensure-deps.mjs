// Installs the npm dependencies when they are missing or older than package-lock.json, so that
// `npm test`, `npm run serve` and `npm start` work right after cloning. With --desktop it also
// makes sure the Electron binary is there (npm start needs it; tests and the headless bridge do not).
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';

function run(command, args, env = process.env) {
  const result = spawnSync(command, args, { stdio: 'inherit', env });
  if (result.status !== 0) process.exit(result.status ?? 1);
}

export function ensureDeps({ desktop = false } = {}) {
  const marker = 'node_modules/.package-lock.json';
  if (!existsSync(marker) || statSync(marker).mtimeMs < statSync('package-lock.json').mtimeMs) {
    console.log('> installing npm dependencies (npm ci)');
    // The Electron binary is only fetched for the desktop app; elsewhere it may not even be reachable.
    run('npm', ['ci', '--no-audit', '--no-fund'], {
      ...process.env,
      ELECTRON_SKIP_BINARY_DOWNLOAD: desktop ? '' : (process.env.ELECTRON_SKIP_BINARY_DOWNLOAD ?? '1'),
    });
  }
  if (desktop && !existsSync('node_modules/electron/path.txt')) {
    console.log('> fetching the Electron binary');
    run(process.execPath, ['node_modules/electron/install.js'], { ...process.env, ELECTRON_SKIP_BINARY_DOWNLOAD: '' });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) ensureDeps({ desktop: process.argv.includes('--desktop') });
