// Generates every icon from build/icon.svg: the app icon in all sizes (build/icons/NxN.png and
// build/icon.png for electron-builder) and the tray icons for each state (build/tray/<state>.png
// and @2x). Run after changing the SVG: npm run icons
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Resvg } from '@resvg/resvg-js';

const source = readFileSync('build/icon.svg', 'utf8');
const render = (svg, size) => new Resvg(svg, { fitTo: { mode: 'width', value: size } }).render().asPng();

mkdirSync('build/icons', { recursive: true });
for (const size of [16, 24, 32, 48, 64, 128, 256, 512, 1024]) writeFileSync(`build/icons/${size}x${size}.png`, render(source, size));
writeFileSync('build/icon.png', render(source, 1024));

// Tray: the same bridge on a disc whose color says the state.
const STATES = { healthy: '#168a4a', degraded: '#d69e2e', down: '#c53030', busy: '#2f6fed' };
mkdirSync('build/tray', { recursive: true });
for (const [state, color] of Object.entries(STATES)) {
  const svg = source.replace('<rect x="64" y="64" width="896" height="896" rx="200" fill="url(#bg)"/>', `<circle cx="512" cy="512" r="480" fill="${color}"/>`);
  writeFileSync(`build/tray/${state}.png`, render(svg, 32));
  writeFileSync(`build/tray/${state}@2x.png`, render(svg, 64));
}
console.log('icons written to build/icons, build/icon.png and build/tray');
