/** Configuration: the environment, read once, validated against one table of settings. */

import { type Level, LEVELS } from "./logging.ts";

/** A setting that failed validation: the message names the variable, the value and what is accepted. */
export class ConfigError extends Error {
  /** The environment variable at fault. */
  readonly variable: string;
  constructor(variable: string, value: string, accepted: string) {
    super(`${variable}=${JSON.stringify(value)} is not valid: expected ${accepted}`);
    this.name = "ConfigError";
    this.variable = variable;
  }
}

/** One setting: the Config key it fills, its default, its description (the README's table) and its parser. */
export interface Setting<K extends string, T> {
  key: K;
  default: string;
  description: string;
  accepted: string;
  /** Returns the parsed value, or undefined when the text is not acceptable. */
  parse(text: string): T | undefined;
}

const MAX_DURATION_MS = 3_600_000;
const DURATION_ACCEPTED = "a duration from 0 to 3600 seconds: 5, 0.25, 5s or 250ms";

/** The addresses `deno task run` (and the image) may listen on: its --allow-net list. */
export const LISTEN_ADDRESSES = ["0.0.0.0", "127.0.0.1", "::", "[::]"];

/** The settings, by variable: the Config key each fills and the type it parses to (the one declaration of both). */
export interface Settings {
  PORT: Setting<"port", number>;
  HOST: Setting<"host", string>;
  LOG_LEVEL: Setting<"logLevel", Level>;
  LOG_FORMAT: Setting<"logFormat", "json" | "text">;
  LOG_BUFFER: Setting<"logBufferBytes", number>;
  LOG_BUFFER_FULL: Setting<"logBufferFull", "wait" | "drop">;
  MAX_IN_FLIGHT: Setting<"maxInFlight", number>;
  SHUTDOWN_DELAY: Setting<"shutdownDelayMs", number>;
  SHUTDOWN_TIMEOUT: Setting<"shutdownTimeoutMs", number>;
}

/** Every setting the server reads: its variable, default, description and parser. */
export const SETTINGS: Settings = {
  PORT: {
    key: "port",
    default: "8080",
    description: 'listen port (`0` = any free port, reported in the "listening" line)',
    accepted: "an integer from 0 to 65535",
    parse: (text) => /^\d{1,5}$/.test(text) && Number(text) <= 65535 ? Number(text) : undefined,
  },
  HOST: {
    key: "host",
    default: "0.0.0.0",
    description: "listen address: `0.0.0.0` (all IPv4), `127.0.0.1` (loopback) or `::` (all IPv6)",
    accepted: "0.0.0.0, 127.0.0.1 or :: (the addresses the server is permitted to listen on)",
    parse: (text) => LISTEN_ADDRESSES.includes(text) ? (text === "[::]" ? "::" : text) : undefined,
  },
  LOG_LEVEL: {
    key: "logLevel",
    default: "info",
    description: "lowest level written: `debug`, `info`, `warn` or `error` (access lines are `info`)",
    accepted: LEVELS.join(", "),
    parse: (text) => (LEVELS as readonly string[]).includes(text) ? text as Level : undefined,
  },
  LOG_FORMAT: {
    key: "logFormat",
    default: "json",
    description: "`json` (one object per line) or `text` (access lines in the Common Log Format)",
    accepted: "json or text",
    parse: (text) => text === "json" || text === "text" ? text : undefined,
  },
  LOG_BUFFER: {
    key: "logBufferBytes",
    default: "1MiB",
    description: "stdout buffer: log lines wait here while the log reader is slow, instead of stopping the server",
    accepted: "a size from 64KiB to 1GiB: 1048576, 512KiB or 4MiB",
    parse: parseSize,
  },
  LOG_BUFFER_FULL: {
    key: "logBufferFull",
    default: "wait",
    description: "when the buffer is full: `wait` for the reader (nothing lost) or `drop` lines and count them",
    accepted: "wait or drop",
    parse: (text) => text === "wait" || text === "drop" ? text : undefined,
  },
  MAX_IN_FLIGHT: {
    key: "maxInFlight",
    default: "1000",
    description: "requests in flight past which others get a fast `503` with `Retry-After` (probes never do)",
    accepted: "an integer from 1 to 1000000",
    parse: (text) =>
      /^\d{1,7}$/.test(text) && Number(text) >= 1 && Number(text) <= 1_000_000 ? Number(text) : undefined,
  },
  SHUTDOWN_DELAY: {
    key: "shutdownDelayMs",
    default: "0",
    description: "seconds to keep serving after the first signal, with `/readyz` at 503",
    accepted: DURATION_ACCEPTED,
    parse: parseDuration,
  },
  SHUTDOWN_TIMEOUT: {
    key: "shutdownTimeoutMs",
    default: "10",
    description: "seconds the drain may take once the listener is closed",
    accepted: DURATION_ACCEPTED,
    parse: parseDuration,
  },
};

/** The typed configuration the server runs with: one field per setting, named by its `key`. */
export type Config = {
  -readonly [N in keyof Settings as Settings[N]["key"]]: NonNullable<ReturnType<Settings[N]["parse"]>>;
};

/** The names of every variable the server reads (what `--allow-env` must list). */
export const VARIABLES = Object.keys(SETTINGS) as (keyof typeof SETTINGS)[];

/** Parses "1048576", "512KiB" or "4MiB" into bytes; undefined when malformed or outside 64 KiB to 1 GiB. */
export function parseSize(text: string): number | undefined {
  const match = /^(\d{1,10})(KiB|MiB|GiB)?$/.exec(text);
  if (!match) return undefined;
  const bytes = Number(match[1]) * { "": 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 }[match[2] ?? ""]!;
  return bytes >= 64 * 1024 && bytes <= 1024 ** 3 ? bytes : undefined;
}

/** Parses "5", "0.25", "5s" or "250ms" into milliseconds; undefined when malformed or out of range. */
export function parseDuration(text: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?|\.\d+)(ms|s)?$/.exec(text);
  if (!match) return undefined;
  const ms = match[2] === "ms" ? Number(match[1]) : Number(match[1]) * 1000;
  return ms <= MAX_DURATION_MS ? Math.round(ms) : undefined;
}

/**
 * Reads every setting through `get` (an empty value counts as unset) and returns the config.
 * Throws ConfigError on the first bad value.
 */
export function loadConfig(get: (name: string) => string | undefined): Config {
  const config: Record<string, unknown> = {};
  for (const name of VARIABLES) {
    const s: Setting<string, unknown> = SETTINGS[name];
    const raw = get(name);
    const text = raw === undefined || raw.trim() === "" ? s.default : raw.trim();
    const value = s.parse(text);
    if (value === undefined) throw new ConfigError(name, raw ?? "", s.accepted);
    config[s.key] = value;
  }
  return config as unknown as Config;
}
