import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { isJsonObject, LANES } from '../contract/index.js';

/**
 * The config.yaml format. Keys are snake_case because the file is the public format
 * (see the deployment document); the rest of the code reads the parsed object as it is.
 * Objects are strict so that a misspelt key is reported instead of silently ignored.
 */

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Accepts the spellings people use in env files (INFO, WARNING, CRITICAL). */
export const logLevelSchema = z.preprocess((value) => {
  if (typeof value !== 'string') return value;
  const lower = value.trim().toLowerCase();
  if (lower === 'warning') return 'warn';
  if (lower === 'critical') return 'fatal';
  return lower;
}, z.enum(LOG_LEVELS));

const portSchema = z.number().int().min(0).max(65535);

/**
 * Node's timers wait at most 2^31-1 ms (about 24.8 days) and fire a longer one after 1 ms, so a
 * timeout set very high to mean "never" would fail every request at once.
 */
const MAX_TIMER_MS = 2 ** 31 - 1;
const MAX_TIMER_SECONDS = Math.floor(MAX_TIMER_MS / 1000);
const TIMER_LIMIT = "about 24 days, the longest wait Node's timers take";
/** A number of seconds a timer waits for. */
const timerSeconds = (): z.ZodNumber => z.number().max(MAX_TIMER_SECONDS, `at most ${MAX_TIMER_SECONDS}: ${TIMER_LIMIT}`);

/** A whole number of seconds as text ("-1", "300"). */
const SECONDS_TEXT = /^[-+]?\d+$/;
/** One number with its unit, as Go's time.ParseDuration reads it ("5m", "1.5h"). */
const DURATION_PART = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/g;
/** A Go duration: such parts one after the other, with a sign in front ("1h30m", "-1s"). */
const DURATION_TEXT = new RegExp(`^[-+]?(${DURATION_PART.source})+$`);
const SECONDS_PER_UNIT: Record<string, number> = { ns: 1e-9, us: 1e-6, µs: 1e-6, μs: 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600 };
const KEEP_ALIVE_EXPECTED = 'a duration such as "5m", "1h30m", "-1" (for good) or "0"';
/**
 * The longest keep_alive Ollama counts: it holds one in nanoseconds in 64 bits. A number past it
 * wraps around (on x86-64, 1e308 seconds reads as 0: the model is unloaded at once), and a
 * duration past it is refused by Ollama, or in OLLAMA_KEEP_ALIVE silently read as 5m.
 */
const MAX_KEEP_ALIVE_SECONDS = 9_223_372_036;
const KEEP_ALIVE_LIMIT = `at most ${MAX_KEEP_ALIVE_SECONDS} seconds either way (about 292 years), the longest Ollama counts; -1 keeps a model for good`;

/** How long a Go duration is, in seconds, either way. */
function durationSeconds(text: string): number {
  let seconds = 0;
  for (const [, amount, unit] of text.matchAll(DURATION_PART)) seconds += Number(amount) * (SECONDS_PER_UNIT[unit as string] as number);
  return seconds;
}

/**
 * Ollama's keep_alive, as the tiers, the preloadModel action and the managed instances take it:
 * whole seconds (negative: for good) or a Go duration, no longer than Ollama counts. In a request
 * body Ollama reads text only as a Go duration, so text that is a number of seconds ("-1", as YAML
 * keeps it when quoted) is read as that number; it would otherwise refuse every request that
 * carries it. A fraction of a second is refused: Ollama drops it from a number in a request, and
 * reads no number with one in OLLAMA_KEEP_ALIVE (it uses 5m instead).
 */
export const keepAliveSchema = z
  .union([z.number(), z.string()], KEEP_ALIVE_EXPECTED)
  .transform((value) => (typeof value === 'string' && SECONDS_TEXT.test(value) ? Number(value) : value))
  .pipe(
    z.union(
      [
        z
          .number()
          .min(-MAX_KEEP_ALIVE_SECONDS, KEEP_ALIVE_LIMIT)
          .max(MAX_KEEP_ALIVE_SECONDS, KEEP_ALIVE_LIMIT)
          .refine(Number.isInteger, 'whole seconds: Ollama drops a fraction of a second'),
        z
          .string()
          .regex(DURATION_TEXT, KEEP_ALIVE_EXPECTED)
          .refine((text) => durationSeconds(text) <= MAX_KEEP_ALIVE_SECONDS, KEEP_ALIVE_LIMIT),
      ],
      KEEP_ALIVE_EXPECTED,
    ),
  );

/**
 * A file or folder. A leading ~ is the home folder, as a shell would read it: a YAML file, a systemd
 * Environment= line and the desktop app expand nothing, and Ollama would get a folder named "~".
 */
const pathSchema = z
  .string()
  .min(1)
  .transform((value) => (value === '~' || value.startsWith('~/') ? path.join(os.homedir(), value.slice(1)) : value));

/**
 * A mapping by names people choose (teams, models), each name a plain key: "__proto__",
 * "constructor" or "prototype" too, which zod's record would drop or take from Object. Read as a
 * Map, so each name stays an own key, and handed on without a prototype, so a name the file does
 * not have is not found among what every object has.
 */
function namedRecord<T extends z.ZodType>(value: T) {
  return z
    .preprocess((input) => (isJsonObject(input) ? new Map(Object.entries(input)) : input), z.map(z.string().min(1), value))
    .transform((entries) => Object.setPrototypeOf(Object.fromEntries(entries), null) as Record<string, z.output<T>>);
}

const modelTierSchema = z.strictObject({
  name: z.string().min(1),
  /** Memory the model needs, used when Ollama reports no size (cold-load estimate, VRAM fit). */
  vram_gb: z.number().positive().optional(),
  /** Seed of the scheduler's service-time estimate for this model, until requests are measured. */
  expected_latency_ms: z.number().nonnegative().optional(),
  /** GPU index or UUID this tier's model should run on, among otherwise equal backends. */
  gpu_preference: z.union([z.number().int().nonnegative(), z.string().min(1)]).optional(),
  /** keep_alive sent with every request for this model ("-1" pins it in memory). */
  keep_alive: keepAliveSchema.optional(),
  /** Context size for this model unless a client asks for more; one size per model stops reloads. */
  num_ctx: z.number().int().positive().optional(),
});

/** A config rule that puts matching requests in a lane; the first rule that matches wins. */
const laneRuleSchema = z
  .strictObject({
    lane: z.enum(LANES),
    /** A request header (any case) ... */
    header: z.string().min(1).optional(),
    /** ... whose value contains this text (case-insensitive); without it, any value. */
    contains: z.string().optional(),
    /** The client, by the name the bridge reads it as (copilot, openai-sdk, ...) or text of its User-Agent (case-insensitive). */
    client: z.string().min(1).optional(),
  })
  .refine((rule) => rule.header !== undefined || rule.client !== undefined, 'a lane rule needs header or client');

/** Whether `url` reaches the `ollama serve` the bridge starts for a managed backend: plain HTTP on 127.0.0.1 (OLLAMA_HOST) at the URL's own port, at the root. */
function isManagedOllamaUrl({ protocol, hostname, port, pathname }: URL): boolean {
  return protocol === 'http:' && (hostname === '127.0.0.1' || hostname === 'localhost') && port !== '' && pathname === '/';
}

const backendSchema = z
  .strictObject({
    name: z.string().regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, "_", "." or "-"'),
    url: z.url({ protocol: /^https?$/ }),
    /** GPU index or UUID the instance runs on, when known. */
    gpu: z.union([z.number().int().nonnegative(), z.string().min(1)]).optional(),
    /** Among otherwise equal backends, a higher weight is chosen first. */
    weight: z.number().positive().default(1),
    /** Let the bridge start and stop this instance (`ollama serve` on the URL's loopback port, pinned to `gpu`). */
    manage: z.boolean().default(false),
    /** Requests Ollama runs at once per model here (its OLLAMA_NUM_PARALLEL); default: ollama.num_parallel when managed, else 1. */
    parallel: z.number().int().positive().optional(),
  })
  .superRefine((backend, ctx) => {
    const url = new URL(backend.url);
    // Requests go to the origin and path only: credentials and a query would be dropped without a word.
    if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
      const shown = `${url.protocol}//${url.username !== '' || url.password !== '' ? '[redacted]@' : ''}${url.host}${url.pathname}${url.search === '' ? '' : '?[redacted]'}${url.hash}`;
      ctx.addIssue({ code: 'custom', path: ['url'], input: shown, message: 'a URL without user, password, query or fragment: the bridge sends none of them' });
      return;
    }
    if (!backend.manage || isManagedOllamaUrl(url)) return;
    ctx.addIssue({
      code: 'custom',
      path: ['url'],
      input: backend.url,
      message: 'with manage: true, http://127.0.0.1:<port> or http://localhost:<port>: the bridge starts ollama serve on 127.0.0.1 at that port',
    });
  });

const providerSchema = z.strictObject({
  name: z.string().min(1),
  /** "openai" covers OpenAI, Azure OpenAI and any OpenAI-compatible server; "anthropic" is the Messages API. */
  type: z.enum(['openai', 'anthropic']),
  base_url: z.url({ protocol: /^https?$/ }),
  /** The model asked of the provider, whatever the tier. */
  model: z.string().min(1),
  /** Environment variable holding the key; defaults to OPENAI_API_KEY or ANTHROPIC_API_KEY, then CLOUD_API_KEY. */
  api_key_env: z
    .string()
    .regex(/^[A-Z_][A-Z0-9_]*$/)
    .optional(),
  /** Filled from the environment at load; better left out of the file. */
  api_key: z.string().min(1).optional(),
  /** Anthropic requires max_tokens; used when the client sets none. */
  max_tokens: z.number().int().positive().default(4096),
  timeout_seconds: timerSeconds().positive().default(120),
});

export const ROLES = ['admin', 'user', 'viewer'] as const;
export type Role = (typeof ROLES)[number];

/** Limits of one identity or team; a missing figure means no limit. */
const limitsSchema = z.strictObject({
  /** Requests per minute (a token bucket: bursts up to this many, refilled evenly over the minute). */
  rpm: z.number().min(1, 'at least 1: a bucket smaller than one request never admits one').optional(),
  /** Prompt + generated tokens per minute (a token bucket charged with each answer's counts). */
  tpm: z.number().positive().optional(),
  /** Requests running at once. */
  concurrency: z.number().int().positive().optional(),
});

const cloudPolicySchema = z.enum(['allow', 'never']);

/** One API key: only its SHA-256 is stored, so the file never holds a usable key. */
const keySchema = z.strictObject({
  name: z.string().min(1),
  team: z.string().min(1).optional(),
  role: z.enum(ROLES).default('user'),
  /** "sha256:" and 64 hex digits: what `copilot-bridge keys add` writes. */
  hash: z.string().regex(/^sha256:[0-9a-f]{64}$/, 'sha256: and 64 lowercase hex digits'),
  /** Models this key may use: exact names or patterns with "*" (e.g. "qwen2.5-coder:*"). */
  models: z.array(z.string().min(1)).optional(),
  cloud: cloudPolicySchema.default('allow'),
  limits: limitsSchema.optional(),
  created: z.string().optional(),
});

const teamSchema = z.strictObject({
  cloud: cloudPolicySchema.default('allow'),
  limits: limitsSchema.optional(),
  models: z.array(z.string().min(1)).optional(),
});

const jwtSchema = z
  .strictObject({
    /** File holding the HS256 shared secret (at least 32 bytes). */
    secret_file: pathSchema.optional(),
    /** Where the issuer publishes its public keys (RS256, ES256, EdDSA). */
    jwks_url: z.url({ protocol: /^https?$/ }).optional(),
    /** A JWKS kept on disk instead of fetched. */
    jwks_file: pathSchema.optional(),
    issuer: z.string().min(1),
    audience: z.string().min(1),
    /** Tolerated clock difference for exp and nbf. */
    clock_skew_seconds: z.number().min(0).max(300).default(30),
    /** How long a fetched JWKS is used before it is fetched again (an unknown kid refetches sooner). */
    jwks_cache_seconds: z.number().positive().default(600),
    /** Least time between two fetches caused by unknown kids, so made-up kids cannot flood the issuer. */
    jwks_refetch_cooldown_seconds: z.number().min(0).default(30),
    /** Claims that carry the person's name, team and role (a list claim uses its first known value). */
    claims: z
      .strictObject({
        name: z.string().min(1).default('sub'),
        team: z.string().min(1).default('groups'),
        role: z.string().min(1).default('roles'),
      })
      .prefault({}),
    /** Role of a token whose role claim names no known role. */
    default_role: z.enum(ROLES).default('user'),
  })
  .refine(
    (jwt) => [jwt.secret_file, jwt.jwks_url, jwt.jwks_file].filter((v) => v !== undefined).length === 1,
    'exactly one of secret_file, jwks_url or jwks_file',
  );

const priceSchema = z.strictObject({
  /** Dollars per million prompt tokens. */
  input: z.number().min(0),
  /** Dollars per million generated tokens. */
  output: z.number().min(0),
  /** The cloud model these prices belong to. */
  reference: z.string().min(1).optional(),
});

export const configSchema = z.strictObject({
  server: z
    .strictObject({
      host: z.string().min(1).default('127.0.0.1'),
      port: portSchema.default(5000),
      body_limit_mb: z.number().positive().max(1024).default(32),
      /** Time a client has to send a request's head, and its JSON body; answers may take as long as they need. */
      request_timeout_seconds: timerSeconds().positive().default(30),
      /** Open client connections; over it, the one waiting longest without a request in progress is closed. */
      max_connections: z.number().int().min(1).default(1024),
      /** Bearer keys clients must send; required before listening beyond loopback. */
      api_keys: z.array(z.string().min(16, 'at least 16 characters')).default([]),
      /** Extra Host header names accepted besides loopback names (DNS-rebinding guard). */
      allowed_hosts: z.array(z.string().min(1)).default([]),
      /** Extra browser origins allowed to call the bridge (exact origins, e.g. https://app.example). */
      cors_origins: z.array(z.string().min(1)).default([]),
      /**
       * On SIGTERM, how long running requests may take to finish; streams still running then end
       * with the surface's in-band error. Keep systemd's TimeoutStopSec above it.
       */
      shutdown_grace_seconds: timerSeconds().nonnegative().default(10),
      /**
       * What GET /api/version answers. Unset: the lowest version among the backends, raised to the
       * Ollama API level the bridge implements itself (clients such as Codex --oss gate on it).
       */
      ollama_version: z
        .string()
        .regex(/^\d+\.\d+\.\d+$/, 'a version such as 0.13.4')
        .optional(),
    })
    .prefault({}),
  backends: z
    .array(backendSchema)
    // The name is how the managed instance, the scheduler's slots, placement and control actions find a backend.
    .superRefine((backends, ctx) => {
      backends.forEach((backend, index) => {
        if (backends.findIndex((other) => other.name === backend.name) === index) return;
        ctx.addIssue({ code: 'custom', path: [index, 'name'], input: backend.name, message: 'a name no other backend has' });
      });
    })
    .default([]),
  dual_gpu: z.boolean().default(false),
  models: z
    .strictObject({
      simple: modelTierSchema.default({ name: 'qwen2.5-coder:1.5b' }),
      moderate: modelTierSchema.optional(),
      complex: modelTierSchema.default({ name: 'qwen2.5-coder:7b-instruct-q8_0' }),
      /** The model that computes embeddings asked of a virtual model (auto, bridge/<tier>); default: the tier's own. */
      embedding: z.strictObject({ name: z.string().min(1) }).optional(),
    })
    .prefault({}),
  routing: z
    .strictObject({
      classification: z
        .strictObject({
          simple_keywords: z.array(z.string().min(1)).default([]),
          moderate_keywords: z.array(z.string().min(1)).default([]),
          complex_keywords: z.array(z.string().min(1)).default([]),
          /** Tier of a chat request that no keyword or signal places. */
          default_tier: z.enum(['simple', 'moderate', 'complex']).default('moderate'),
          /** Estimated prompt tokens (characters / 4) from which a request counts as long: complex. */
          long_context_tokens: z.number().int().positive().default(6000),
          /** User turns from which a conversation is at least moderate. */
          many_turns: z.number().int().positive().default(12),
        })
        .prefault({}),
      thresholds: z
        .strictObject({
          /** Longest wait for an upstream's first byte; cold model loads are slow. */
          timeout_seconds: timerSeconds().positive().default(180),
          max_retries: z.number().int().min(0).max(10).default(3),
          connect_timeout_seconds: timerSeconds().positive().default(5),
          /** Longest silence between two chunks of a streaming answer. */
          idle_timeout_seconds: timerSeconds().positive().default(120),
          /** Longest line of an upstream's streamed answer (and largest JSON answer); longer fails that request. */
          max_line_mb: z.number().positive().max(1024).default(16),
          /** Silence after which a started Anthropic or Responses stream gets a ping / keep-alive comment. */
          heartbeat_seconds: timerSeconds().positive().default(10),
        })
        .prefault({}),
      health: z
        .strictObject({
          /** How often each backend is asked for /api/ps (liveness and loaded models). */
          interval_seconds: timerSeconds().positive().default(5),
          timeout_seconds: timerSeconds().positive().default(2),
        })
        .prefault({}),
      scheduler: z
        .strictObject({
          /** The bridge holds the queue: lanes, estimates, cancelled work never sent upstream. */
          enabled: z.boolean().default(true),
          lane_rules: z.array(laneRuleSchema).default([]),
          /** Ghost text that waited this long in the queue is answered empty instead of late. */
          fim_max_wait_ms: z.number().int().positive().max(MAX_TIMER_MS, `at most ${MAX_TIMER_MS}: ${TIMER_LIMIT}`).default(1500),
          /** Each time a request waits this long it moves up one lane, so no lane starves. */
          age_boost_ms: z.number().int().positive().default(10_000),
          /** Slots per backend and model only ghost text may use (give Ollama that many more with backends[].parallel). */
          fim_reserved_slots: z.number().int().min(0).default(0),
        })
        .prefault({}),
      circuit_breaker: z
        .strictObject({
          /** Consecutive failed requests after which a backend gets no traffic. */
          failure_threshold: z.number().int().positive().default(3),
          /** Pause before one probe request may test it again. */
          cooldown_seconds: z.number().positive().default(15),
        })
        .prefault({}),
    })
    .prefault({}),
  monitoring: z
    .strictObject({
      prometheus: z
        .strictObject({
          enabled: z.boolean().default(true),
          port: portSchema.optional(),
        })
        .prefault({}),
      logging: z
        .strictObject({
          level: logLevelSchema.default('info'),
          /** "stdout", or a folder that receives copilot-bridge.log. */
          destination: pathSchema.default('stdout'),
          /** Prompt and completion text is never logged unless this is turned on. */
          log_prompts: z.boolean().default(false),
        })
        .prefault({}),
    })
    .prefault({}),
  fallback: z
    .strictObject({
      enabled: z.boolean().default(false),
      cloud_api_key: z.string().min(1).optional(),
      providers: z.array(providerSchema).default([]),
      /** Models (names or "*" patterns) whose requests never go to a cloud provider. */
      never_models: z.array(z.string().min(1)).default([]),
    })
    .prefault({}),
  /** The `ollama serve` instances the bridge starts for backends with `manage: true`. */
  ollama: z
    .strictObject({
      /** Path of the ollama binary; default: OLLAMA_BIN, then ollama on PATH. */
      binary: pathSchema.optional(),
      /** Start managed instances with the bridge. */
      autostart: z.boolean().default(true),
      /** One model store shared by all instances (OLLAMA_MODELS; OLLAMA_NOPRUNE=1 is set with it). */
      models_dir: pathSchema.optional(),
      // Unset, each is what the bridge's own environment says (OLLAMA_KEEP_ALIVE, ...), else Ollama's default.
      // OLLAMA_KEEP_ALIVE: Ollama takes whole seconds or a duration there, and silently uses 5m for anything else.
      keep_alive: keepAliveSchema.transform(String).optional(),
      num_parallel: z.number().int().positive().default(1),
      max_loaded_models: z.number().int().positive().optional(),
      max_queue: z.number().int().positive().optional(),
      restart_limit: z.number().int().min(0).default(5),
      restart_window_seconds: z.number().positive().default(600),
      stop_grace_seconds: timerSeconds().positive().default(5),
      log_max_mb: z.number().positive().default(5),
    })
    .prefault({}),
  gpu_monitor: z
    .strictObject({
      enabled: z.boolean().default(true),
      /** The nvidia-smi to run: a path, or a name looked up on PATH. */
      command: z.string().min(1).default('nvidia-smi'),
      // Live figures: an hour between samples is already no monitor, and ten rounds of silence (the
      // watchdog on a hung nvidia-smi) must stay within what Node's timers wait.
      interval_seconds: z.number().min(0.1).max(3600).default(1),
      /** How much history each GPU keeps for the charts. */
      history_minutes: z.number().positive().default(60),
    })
    .prefault({}),
  /** Where history (and the control token) live; the desktop app passes its own data folder. */
  data_dir: pathSchema.optional(),
  history: z
    .strictObject({
      /** Records kept in memory for the dashboard. */
      max_records: z.number().int().positive().default(10000),
      /** The history file is rotated at this size. */
      max_file_mb: z.number().positive().default(10),
      /** Rotated files kept besides the current one. */
      keep_files: z.number().int().min(0).default(3),
    })
    .prefault({}),
  auth: z
    .strictObject({
      keys: z
        .array(keySchema)
        // One key as two entries would be whoever comes last, with that entry's role.
        .superRefine((keys, ctx) => {
          keys.forEach((key, index) => {
            const first = keys.findIndex((other) => other.hash === key.hash);
            if (first === index) return;
            const other = `auth.keys.${first}, ${keys[first]?.name ?? ''},`;
            ctx.addIssue({ code: 'custom', path: [index, 'hash'], input: key.hash, message: `a hash no other key has (${other} has it)` });
          });
        })
        .default([]),
      jwt: jwtSchema.optional(),
      /** Cloud policy and limits that apply to everybody in a team. */
      teams: namedRecord(teamSchema).prefault({}),
    })
    .prefault({}),
  limits: z
    .strictObject({
      /** Share the counters with other instances through Redis (e.g. redis://127.0.0.1:6379/0). */
      redis_url: z.url({ protocol: /^rediss?$/ }).optional(),
      /** Limits of every identity that names none of its own. */
      default: limitsSchema.optional(),
    })
    .prefault({}),
  accounting: z
    .strictObject({
      /** $ per 1M tokens by model name or tier; a model's own entry wins over its tier's. */
      prices: namedRecord(priceSchema).prefault({}),
      /** Electricity price in $ per kWh. */
      kwh_price: z.number().min(0).default(0.3),
      /** What the GPU machine costs per month (amortized purchase, hosting), for the ROI. */
      hardware_cost_per_month: z.number().min(0).default(0),
      /** An estimate: seconds of a developer's time one generated token saves. */
      seconds_saved_per_output_token: z.number().min(0).default(0.05),
      /** Add a per-person label to the accounting series (keep off for many people). */
      per_user_metrics: z.boolean().default(false),
    })
    .prefault({}),
  control: z
    .strictObject({
      /** Token the dashboard and tray send with actions; generated per start when unset. */
      token: z.string().min(16).optional(),
    })
    .prefault({}),
});

export type ParsedConfig = z.output<typeof configSchema>;
export type BackendConfig = z.output<typeof backendSchema>;
export type ProviderConfig = z.output<typeof providerSchema>;
export type KeyConfig = z.output<typeof keySchema>;
export type LimitsConfig = z.output<typeof limitsSchema>;
export type JwtConfig = z.output<typeof jwtSchema>;
export type PriceConfig = z.output<typeof priceSchema>;

/** The validated configuration: the file's shape with at least one backend resolved. */
export interface Config extends ParsedConfig {
  backends: [BackendConfig, ...BackendConfig[]];
}
