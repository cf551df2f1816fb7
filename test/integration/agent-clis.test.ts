import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { BridgeHandle } from '../../src/bridge.js';
import type { HistoryRecord } from '../../src/history/store.js';
import { AGENT_CLIS, cliUnavailable, ensureAgentCli } from '../support/agent-clis.js';
import { startTestBridge } from '../support/bridge.js';
import { startScriptedOllama, type ScriptedChat, type ScriptedOllama, type ScriptedTurn } from '../support/scripted-ollama.js';
import { tempDir, configFile } from '../support/temp.js';

/**
 * The real Claude Code, Codex and opencode CLIs, headless, against the bridge: each is asked about
 * a file, the scripted model behind the bridge answers with a call to the CLI's own file tool, the
 * CLI runs it and sends the result back, and the model's answer quotes it. The marker in the CLI's
 * final output proves the whole round trip went through the Messages / Responses / Chat
 * Completions translation. aider has no tools: it sends the file's text in its prompt and applies
 * the edit the model answers in its own format, so the file's new text (quoting the old) proves
 * its round trip.
 */

const MODELS = { small: 'scripted-small:1b', large: 'scripted-large:7b' };
const MARKER = 'MARKER-7f3a9c';
const AIDER_MARKER = 'MARKER-a1d3e5';

/** Calls the CLI's file tool (Claude Code: Read; Codex: exec_command or shell; opencode: read) once, then quotes what it returned. */
function script(file: string) {
  return (chat: ScriptedChat): ScriptedTurn => {
    const toolResult = [...chat.messages].reverse().find((m) => m.role === 'tool');
    if (toolResult !== undefined) return { text: ['The file says: ', toolResult.content] };
    const tools = new Set((chat.tools ?? []).map((t) => t.function.name));
    if (tools.has('Read')) return { toolCalls: [{ name: 'Read', arguments: { file_path: file } }] };
    if (tools.has('exec_command')) return { toolCalls: [{ name: 'exec_command', arguments: { cmd: `cat ${file}` } }] };
    if (tools.has('shell')) return { toolCalls: [{ name: 'shell', arguments: { command: ['cat', file] } }] };
    if (tools.has('read')) return { toolCalls: [{ name: 'read', arguments: { filePath: file } }] };
    // aider (no tools; it sent the file's text): its whole-file edit format, the file's new text quoting the old.
    if (chat.messages.some((m) => m.content.includes(AIDER_MARKER))) return { text: ['todo.txt\n```\n', `seen ${AIDER_MARKER}\n`, '```\n'] };
    return { text: ['ok'] };
  };
}

function run(argv: readonly string[], cwd: string, env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(argv[0] as string, argv.slice(1), { cwd, env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('coding-agent CLIs through the bridge', () => {
  let ollama: ScriptedOllama;
  let bridge: BridgeHandle;
  let work: string;
  let file: string;
  const records: HistoryRecord[] = [];

  before(async () => {
    work = realpathSync(tempDir('agent-cli-work-'));
    file = path.join(work, 'notes.txt');
    writeFileSync(file, `${MARKER}\n`);
    ollama = await startScriptedOllama(Object.values(MODELS), script(file));
    const config = configFile(`models:\n  simple:\n    name: "${MODELS.small}"\n  complex:\n    name: "${MODELS.large}"\n`);
    bridge = await startTestBridge({ file: config, env: { OLLAMA_HOST: ollama.url } });
    bridge.history.onRecord((record) => records.push(record));
  });
  after(async () => {
    await bridge?.stop(100);
    await ollama?.close();
  });

  it('Claude Code (claude -p --output-format json) reads a file through a tool call and answers', async (t) => {
    const cli = await ensureAgentCli('claude');
    if ('missing' in cli) return t.skip(cliUnavailable('claude', cli.missing));
    const home = tempDir('claude-home-');
    const result = await run([...cli.command, '-p', 'What does notes.txt say?', '--output-format', 'json', '--model', MODELS.large], work, {
      HOME: home,
      ANTHROPIC_BASE_URL: bridge.url,
      ANTHROPIC_API_KEY: 'unused',
      ANTHROPIC_SMALL_FAST_MODEL: MODELS.small,
      ANTHROPIC_DEFAULT_HAIKU_MODEL: MODELS.small,
      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
      DISABLE_AUTOUPDATER: '1',
    });
    assert.equal(result.code, 0, `claude exited ${result.code}: ${result.stdout}\n${result.stderr}`);
    const answer = JSON.parse(result.stdout) as { is_error: boolean; result: string; num_turns: number };
    assert.equal(answer.is_error, false, result.stdout);
    assert.match(answer.result, new RegExp(`The file says: .*${MARKER}`, 's'));
    // The model saw the tool's output: Claude Code ran Read and sent a tool_result back.
    assert.ok(ollama.chats.some((chat) => chat.messages.some((m) => m.role === 'tool' && m.content.includes(MARKER))));
    const claude = records.filter((r) => r.path === '/v1/messages');
    assert.ok(claude.length >= 2, `Claude Code made ${claude.length} Messages requests`);
    assert.ok(claude.every((r) => r.client === 'claude-code' && r.surface === 'anthropic'));
  });

  it('Codex (codex exec) reads a file through a tool call and answers', async (t) => {
    const cli = await ensureAgentCli('codex');
    if ('missing' in cli) return t.skip(cliUnavailable('codex', cli.missing));
    const codexHome = path.join(tempDir('codex-home-'), '.codex');
    mkdirSync(codexHome, { recursive: true });
    writeFileSync(
      path.join(codexHome, 'config.toml'),
      [
        `model = "${MODELS.large}"`,
        'model_provider = "bridge"',
        '',
        '[model_providers.bridge]',
        'name = "copilot-bridge"',
        `base_url = "${bridge.url}/v1"`,
        'wire_api = "responses"',
        '',
      ].join('\n'),
    );
    const result = await run(
      [...cli.command, 'exec', '--skip-git-repo-check', '--dangerously-bypass-approvals-and-sandbox', 'What does notes.txt say?'],
      work,
      {
        HOME: path.dirname(codexHome),
        CODEX_HOME: codexHome,
      },
    );
    assert.equal(result.code, 0, `codex exited ${result.code}: ${result.stdout}\n${result.stderr}`);
    assert.match(result.stdout, new RegExp(`The file says: .*${MARKER}`, 's'), `${result.stdout}\n${result.stderr}`);
    assert.ok(ollama.chats.some((chat) => chat.messages.some((m) => m.role === 'tool' && m.content.includes(MARKER))));
    const codex = records.filter((r) => r.path === '/v1/responses');
    assert.ok(codex.length >= 2, `Codex made ${codex.length} Responses requests`);
    assert.ok(codex.every((r) => r.client === 'codex'));
  });

  it('Codex --oss accepts the bridge although its backend runs Ollama 0.11.4 (Codex requires 0.13.4)', async (t) => {
    const cli = await ensureAgentCli('codex');
    if ('missing' in cli) return t.skip(cliUnavailable('codex', cli.missing));
    const codexHome = path.join(tempDir('codex-oss-home-'), '.codex');
    mkdirSync(codexHome, { recursive: true });
    const result = await run(
      [
        ...cli.command,
        'exec',
        '--oss',
        '--local-provider',
        'ollama',
        '-m',
        MODELS.large,
        '--skip-git-repo-check',
        '--dangerously-bypass-approvals-and-sandbox',
        'What does notes.txt say?',
      ],
      work,
      {
        HOME: path.dirname(codexHome),
        CODEX_HOME: codexHome,
        CODEX_OSS_BASE_URL: `${bridge.url}/v1`,
      },
    );
    assert.equal(result.code, 0, `codex --oss exited ${result.code}: ${result.stdout}\n${result.stderr.slice(0, 2000)}`);
    assert.match(result.stdout, new RegExp(`The file says: .*${MARKER}`, 's'));
  });

  it('opencode (opencode run) reads a file through a tool call and answers', async (t) => {
    const cli = await ensureAgentCli('opencode');
    if ('missing' in cli) return t.skip(cliUnavailable('opencode', cli.missing));
    const earlier = records.length;
    const home = tempDir('opencode-home-');
    // opencode installs its plugin package (from npm) into each config folder that lacks it; this
    // one's package files say it is there, so nothing is fetched.
    const configDir = path.join(home, '.config', 'opencode');
    mkdirSync(path.join(configDir, 'node_modules'), { recursive: true });
    const dependencies = { '@opencode-ai/plugin': AGENT_CLIS.opencode.version };
    writeFileSync(path.join(configDir, 'package.json'), JSON.stringify({ dependencies }));
    writeFileSync(path.join(configDir, 'package-lock.json'), JSON.stringify({ packages: { '': { dependencies } } }));
    const model = (name: string) => ({ name, tool_call: true, limit: { context: 32768, output: 4096 } });
    const config = {
      $schema: 'https://opencode.ai/config.json',
      provider: {
        bridge: {
          npm: '@ai-sdk/openai-compatible',
          name: 'copilot-bridge',
          options: { baseURL: `${bridge.url}/v1`, apiKey: 'unused' },
          models: { [MODELS.large]: model(MODELS.large), [MODELS.small]: model(MODELS.small) },
        },
      },
      model: `bridge/${MODELS.large}`,
      small_model: `bridge/${MODELS.small}`,
      autoupdate: false,
      share: 'disabled',
    };
    const result = await run([...cli.command, 'run', 'What does notes.txt say?'], work, {
      HOME: home,
      OPENCODE_CONFIG_CONTENT: JSON.stringify(config),
      OPENCODE_DISABLE_MODELS_FETCH: '1',
      OPENCODE_DISABLE_AUTOUPDATE: '1',
      OPENCODE_DISABLE_DEFAULT_PLUGINS: '1',
      OPENCODE_DISABLE_LSP_DOWNLOAD: '1',
    });
    assert.equal(result.code, 0, `opencode exited ${result.code}: ${result.stdout}\n${result.stderr}`);
    assert.match(result.stdout, new RegExp(`The file says: .*${MARKER}`, 's'), `${result.stdout}\n${result.stderr}`);
    assert.ok(ollama.chats.some((chat) => chat.messages.some((m) => m.role === 'tool' && m.content.includes(MARKER))));
    const opencode = records.slice(earlier).filter((r) => r.path === '/v1/chat/completions');
    assert.ok(opencode.length >= 2, `opencode made ${opencode.length} Chat Completions requests`);
    assert.ok(opencode.every((r) => r.client === 'opencode'));
  });

  it('aider (aider --message) edits a file with what the model answered', async (t) => {
    const cli = await ensureAgentCli('aider');
    if ('missing' in cli) return t.skip(cliUnavailable('aider', cli.missing));
    const earlier = records.length;
    const aiderWork = realpathSync(tempDir('aider-work-'));
    const todo = path.join(aiderWork, 'todo.txt');
    writeFileSync(todo, `${AIDER_MARKER}\n`);
    const home = tempDir('aider-home-');
    // Metadata for the models, so aider does not fetch litellm's model catalogue to look them up.
    const metadata = path.join(home, 'models.json');
    const info = {
      max_input_tokens: 32768,
      max_output_tokens: 4096,
      input_cost_per_token: 0,
      output_cost_per_token: 0,
      litellm_provider: 'openai',
      mode: 'chat',
    };
    writeFileSync(metadata, JSON.stringify({ [`openai/${MODELS.large}`]: info, [`openai/${MODELS.small}`]: info }));
    const result = await run(
      [
        ...cli.command,
        '--model',
        `openai/${MODELS.large}`,
        '--weak-model',
        `openai/${MODELS.small}`,
        '--openai-api-base',
        `${bridge.url}/v1`,
        '--openai-api-key',
        'unused',
        '--edit-format',
        'whole',
        '--message',
        'Say in todo.txt that you have seen it.',
        '--yes-always',
        '--no-git',
        '--analytics-disable',
        '--no-check-update',
        '--no-show-release-notes',
        '--no-show-model-warnings',
        '--no-pretty',
        '--no-fancy-input',
        '--map-tokens',
        '0',
        '--model-metadata-file',
        metadata,
        'todo.txt',
      ],
      aiderWork,
      { HOME: home, LITELLM_LOCAL_MODEL_COST_MAP: 'True' },
    );
    assert.equal(result.code, 0, `aider exited ${result.code}: ${result.stdout}\n${result.stderr}`);
    // The model only answers with this edit when the file's text reached it; aider wrote the answer back.
    assert.equal(readFileSync(todo, 'utf8'), `seen ${AIDER_MARKER}\n`, `${result.stdout}\n${result.stderr}`);
    // aider talks through litellm, which sends the OpenAI Python SDK's User-Agent and nothing naming aider.
    const aider = records.slice(earlier).filter((r) => r.path === '/v1/chat/completions');
    assert.ok(aider.length >= 1, 'aider made no Chat Completions request');
    assert.ok(aider.every((r) => r.client === 'openai-sdk' && r.requestedModel === MODELS.large && r.status === 200));
  });
});
