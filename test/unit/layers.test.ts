import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ESLint } from 'eslint';

const eslint = new ESLint();

/** The rules that fire on `code` as if it were the file at `file`. */
async function violations(file: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath: path.resolve(file) });
  return (result?.messages ?? []).map((m) => `${m.ruleId ?? 'parse'}: ${m.message}`);
}

describe('layer order, as the linter enforces it', () => {
  it('lets the contract import nothing of the project, nor Node or packages', async () => {
    const found = await violations(
      'src/contract/probe.ts',
      "import type { Config } from '../config/schema.js';\nimport { readFileSync } from 'node:fs';\nexport const x: [Config?, unknown?] = [undefined, readFileSync];\n",
    );
    assert.equal(found.filter((v) => v.startsWith('import-x/no-restricted-paths')).length, 1, found.join('\n'));
    assert.equal(found.filter((v) => v.startsWith('no-restricted-imports')).length, 1, found.join('\n'));
    assert.deepEqual(await violations('src/contract/probe.ts', "import type { Tier } from './types.js';\nexport const t: Tier = 'simple';\n"), []);
  });

  for (const layer of ['upstream', 'routing', 'gpu', 'history', 'metrics']) {
    it(`keeps ${layer}/ away from http, api, control and express`, async () => {
      const code = [
        "import { createApp } from '../http/app.js';",
        "import { sendError } from '../api/errors.js';",
        "import { controlRoutes } from '../control/routes.js';",
        "import express from 'express';",
        'export const all = [createApp, sendError, controlRoutes, express];',
        '',
      ].join('\n');
      const found = await violations(`src/${layer}/probe.ts`, code);
      assert.equal(found.filter((v) => v.startsWith('import-x/no-restricted-paths')).length, 3, found.join('\n'));
      assert.equal(found.filter((v) => v.startsWith('no-restricted-imports')).length, 1, found.join('\n'));
      assert.deepEqual(await violations(`src/${layer}/probe.ts`, "import { sameModel } from '../contract/index.js';\nexport const same = sameModel;\n"), []);
    });
  }

  it('lets http mount the API surfaces but never the reverse, so the two cannot import each other in a loop', async () => {
    assert.deepEqual(await violations('src/http/probe.ts', "import { sendError } from '../api/errors.js';\nexport const send = sendError;\n"), []);
    const found = await violations('src/api/probe.ts', "import { guard } from '../http/guard.js';\nexport const g = guard;\n");
    assert.deepEqual(
      found.map((v) => v.split(':')[0]),
      ['import-x/no-restricted-paths'],
    );
  });

  it('keeps electron and react out of src/', async () => {
    const found = await violations(
      'src/bridge-probe.ts',
      "import { app } from 'electron';\nimport { useState } from 'react';\nexport const both = [app, useState];\n",
    );
    assert.equal(found.filter((v) => v.startsWith('no-restricted-imports')).length, 2, found.join('\n'));
  });
});
