import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import express, { type Router as ExpressRouter } from 'express';

/**
 * Where `vite build` put the dashboard: the nearest `ui/` or `dist/ui/` above this file, which
 * covers the compiled bridge (dist/), the desktop build (dist/app/) and running from source (src/).
 */
export function defaultUiDir(): string | undefined {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let level = 0; level < 6; level++) {
    for (const candidate of [path.join(dir, 'ui'), path.join(dir, 'dist', 'ui')]) {
      if (existsSync(path.join(candidate, 'index.html'))) return candidate;
    }
    dir = path.dirname(dir);
  }
  return undefined;
}

/**
 * The dashboard's static files at /ui, under a strict Content Security Policy: only this origin,
 * no inline scripts, no framing. Every path below /ui that is not a file gets index.html.
 */
export function uiRoutes(uiDir: string | undefined): ExpressRouter {
  const router = express.Router();
  const csp =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
  router.use('/ui', (_req, res, next) => {
    res.setHeader('content-security-policy', csp);
    res.setHeader('x-content-type-options', 'nosniff');
    res.setHeader('referrer-policy', 'no-referrer');
    next();
  });
  if (uiDir === undefined) {
    router.get('/ui{/*rest}', (_req, res) => {
      res.status(503).type('text/plain').send('The dashboard is not built: run `npm run build`.');
    });
    return router;
  }
  router.use(
    '/ui',
    express.static(uiDir, {
      index: 'index.html',
      maxAge: '1h',
      setHeaders: (res, file) => file.endsWith('index.html') && res.setHeader('cache-control', 'no-cache'),
    }),
  );
  router.get('/ui{/*rest}', (_req, res) => {
    res.setHeader('cache-control', 'no-cache');
    res.sendFile(path.join(uiDir, 'index.html'));
  });
  return router;
}
