/** Configuration: the environment, read once, validated against one table of settings. */

import { type Level, LEVELS } from "./logging.ts";

/** The typed configuration the server runs with. */
export interface Config {
  port: number;
  host: string;
  logLevel: Level;
  logFormat: "json" | "text";
  /** Milliseconds to keep serving after the first signal, with /readyz at 503. */
  shutdownDelayMs: number;
  /** Milliseconds the drain may take once the listener is closed. */
  shutdownTimeoutMs: number;
}

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

interface Setting<K extends keyof Config> {
  key: K;
  default: string;
  description: string;
  accepted: string;
  /** Returns the parsed value, or undefined when the text is not acceptable. */
  parse(text: string): Config[K] | undefined;
}

function setting<K extends keyof Config>(s: Setting<K>): Setting<K> {
  return s;
}

const MAX_DURATION_MS = 3_600_000;
const DURATION_ACCEPTED = "a duration from 0 to 3600 seconds: 5, 0.25, 5s or 250ms";

/** Every setting the server reads: its variable, default, description and parser. */
export const SETTINGS = {
  PORT: setting({
    key: "port",
    default: "8080",
    description: "listen port (0 = any free port, reported in the listening line)",
    accepted: "an integer from 0 to 65535",
    parse: (text) => /^\d{1,5}$/.test(text) && Number(text) <= 65535 ? Number(text) : undefined,
  }),
  HOST: setting({
    key: "host",
    default: "0.0.0.0",
    description: "listen address",
    accepted: "an IPv4 or IPv6 address or a host name",
    parse: (text) => /^(\[?[0-9A-Fa-f:.]+\]?|[A-Za-z0-9.-]{1,253})$/.test(text) ? text : undefined,
  }),
  LOG_LEVEL: setting({
    key: "logLevel",
    default: "info",
    description: "lowest level written: debug, info, warn or error",
    accepted: LEVELS.join(", "),
    parse: (text) => (LEVELS as readonly string[]).includes(text) ? text as Level : undefined,
  }),
  LOG_FORMAT: setting({
    key: "logFormat",
    default: "json",
    description: "json (one object per line) or text (access lines in the Common Log Format)",
    accepted: "json or text",
    parse: (text) => text === "json" || text === "text" ? text : undefined,
  }),
  SHUTDOWN_DELAY: setting({
    key: "shutdownDelayMs",
    default: "0",
    description: "seconds to keep serving after the first signal, with /readyz at 503",
    accepted: DURATION_ACCEPTED,
    parse: parseDuration,
  }),
  SHUTDOWN_TIMEOUT: setting({
    key: "shutdownTimeoutMs",
    default: "10",
    description: "seconds the drain may take once the listener is closed",
    accepted: DURATION_ACCEPTED,
    parse: parseDuration,
  }),
} as const;

/** The names of every variable the server reads (what `--allow-env` must list). */
export const VARIABLES = Object.keys(SETTINGS) as (keyof typeof SETTINGS)[];

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
  const config: Partial<Record<keyof Config, unknown>> = {};
  for (const name of VARIABLES) {
    const s: Setting<keyof Config> = SETTINGS[name];
    const raw = get(name);
    const text = raw === undefined || raw.trim() === "" ? s.default : raw.trim();
    const value = s.parse(text);
    if (value === undefined) throw new ConfigError(name, raw ?? "", s.accepted);
    config[s.key] = value;
  }
  return config as Config;
}
