import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { describe, it } from 'node:test';
import { Ajv } from 'ajv';
import YAML from 'yaml';

const require = createRequire(import.meta.url);

/** Width and height from a PNG's IHDR chunk. */
function pngSize(file: string): [number, number] {
  const bytes = readFileSync(file);
  assert.equal(bytes.toString('latin1', 1, 4), 'PNG', `${file} is not a PNG`);
  return [bytes.readUInt32BE(16), bytes.readUInt32BE(20)];
}

describe('desktop packaging', () => {
  const config = YAML.parse(readFileSync('electron-builder.yml', 'utf8')) as Record<string, unknown> & {
    linux: { target: string[]; icon: string };
    deb: { depends: string[] };
    win: { target: string[] };
    mac: { target: string[] };
    extraResources: Array<{ from: string; to: string }>;
    files: string[];
  };

  it('is a valid electron-builder configuration (its own JSON schema)', () => {
    const schema = JSON.parse(readFileSync(require.resolve('app-builder-lib/scheme.json'), 'utf8')) as object;
    const ajv = new Ajv({ allErrors: true, strict: false, allowUnionTypes: true });
    const validate = ajv.compile(schema);
    assert.ok(validate(config), JSON.stringify(validate.errors, null, 2));
  });

  it('builds AppImage and deb (with an AppIndicator for the tray), nsis and dmg', () => {
    assert.deepEqual(config.linux.target, ['AppImage', 'deb']);
    assert.ok(config.deb.depends.includes('libappindicator3-1'));
    assert.deepEqual(config.win.target, ['nsis']);
    assert.deepEqual(config.mac.target, ['dmg']);
  });

  it('ships the compiled app, its entry point and the tray icons', () => {
    const manifest = JSON.parse(readFileSync('package.json', 'utf8')) as { main: string };
    assert.equal(manifest.main, 'dist/app/electron/main.js');
    assert.ok(config.files.includes('dist/**'));
    assert.deepEqual(config.extraResources, [{ from: 'build/tray', to: 'tray' }]);
  });

  it('has every icon size, generated from build/icon.svg, and a tray icon per state', () => {
    for (const size of [16, 24, 32, 48, 64, 128, 256, 512, 1024]) {
      assert.deepEqual(pngSize(path.join(config.linux.icon, `${size}x${size}.png`)), [size, size]);
    }
    assert.deepEqual(pngSize('build/icon.png'), [1024, 1024]);
    assert.match(readFileSync('build/icon.svg', 'utf8'), /^<svg /);
    for (const state of ['healthy', 'degraded', 'down', 'busy']) {
      assert.deepEqual(pngSize(`build/tray/${state}.png`), [32, 32]);
      assert.deepEqual(pngSize(`build/tray/${state}@2x.png`), [64, 64]);
    }
    assert.ok(existsSync('scripts/icons.mjs'));
  });
});
