/**
 * The bottom layer: types and small helpers shared by every part of the bridge, the dashboard and
 * the tray. Plain TypeScript with no imports from Node, packages or the rest of the project.
 */
export * from './types.js';
export * from './models.js';
export * from './format.js';
export * from './health.js';
export * from './gpu.js';
export * from './request.js';
export * from './errors.js';
export * from './cancel.js';
export * from './ollama.js';
