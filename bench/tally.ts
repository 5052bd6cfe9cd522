/**
 * The rollout's counting: what one subject went through in one balancer mode, its failures (a lost access line
 * is one too), and its row of the table.
 */

import type { LoadCounts } from "./load.ts";
import type { NewConnectionCounts } from "./new_connection_client.ts";
import type { Figure, Row } from "./report.ts";
import { summarize } from "./stats.ts";

/** What was measured for one subject in one mode. */
export interface Outcome {
  subject: string;
  mode: "l4" | "l7";
  keepAlive?: LoadCounts;
  newConnection?: NewConnectionCounts;
  /** Access lines of 200 answers to the load's path, summed over every replica (all have exited). */
  linesLogged: number;
  /** Duration of each rollout cycle (every replica replaced once), in ms. */
  cyclesMs: number[];
  /** Exit codes of the replicas the rollout stopped. */
  exits: number[];
  /** Exit codes of the replicas stopped after the load, at the end of the run. */
  finalExits: number[];
  /** The end of the stderr of each replica that exited with a code other than 0. */
  exitNotes?: string[];
  /** Why the run of this subject did not complete. */
  error?: string;
}

/** The counts of an outcome, over both clients. */
export interface Tally {
  sent: number;
  ok: number;
  non2xx: number;
  /** Connection errors: refused, reset, closed without an answer, timeout (and any other socket error). */
  connectionErrors: number;
  /** Requests that failed: a non-2xx answer or no answer. */
  failed: number;
  /** Answers received (any status). */
  responses: number;
  /** 2xx answers received that have no access line: lost log lines. */
  linesLost: number;
  /**
   * Access lines beyond the 2xx answers received: requests the server answered that the client never read. At
   * most the keep-alive requests in flight when the load stopped (its connection count) when nothing went wrong.
   */
  linesUnanswered: number;
  /** Requests still in flight when the keep-alive load stopped, neither answered nor failed. */
  inFlightAtStop: number;
  /**
   * Keep-alive requests sent that got neither an answer nor an error, beyond one in flight per connection at the
   * stop. Reported, not counted as failed: the tools' own "sent" counts are approximate (wrk's, from its Lua
   * request() hook, was once seen one above the connection count with no error and no missing access line), and autocannon does not report every reset.
   */
  vanished: number;
  uncleanExits: number;
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

/** Counts an outcome. */
export function tally(o: Outcome): Tally {
  const ka = o.keepAlive;
  const nc = o.newConnection;
  const ncResponses = nc ? sum(Object.values(nc.statuses)) : 0;
  const ncOk = nc ? sum(Object.entries(nc.statuses).filter(([s]) => s.startsWith("2")).map(([, n]) => n)) : 0;
  const kaErrors = ka ? ka.connect + ka.read + ka.write + ka.timeout : 0;
  const ncErrors = nc ? sum(Object.values(nc.errors)) : 0;
  const non2xx = (ka?.non2xx ?? 0) + (ncResponses - ncOk);
  const inFlightAtStop = ka ? Math.max(0, ka.sent - ka.responses - ka.read - ka.write - ka.timeout) : 0;
  const vanished = ka ? Math.max(0, inFlightAtStop - ka.connections) : 0;
  const responses = (ka?.responses ?? 0) + ncResponses;
  const ok = (ka ? ka.responses - ka.non2xx : 0) + ncOk;
  return {
    sent: (ka?.sent ?? 0) + (nc?.sent ?? 0),
    ok,
    non2xx,
    connectionErrors: kaErrors + ncErrors,
    failed: non2xx + kaErrors + ncErrors,
    responses,
    linesLost: Math.max(0, ok - o.linesLogged),
    linesUnanswered: Math.max(0, o.linesLogged - ok),
    inFlightAtStop,
    vanished,
    uncleanExits: o.exits.filter((code) => code !== 0).length,
  };
}

/** True when the outcome failed a request, lost a line, stopped uncleanly or did not complete. */
export function failed(o: Outcome): boolean {
  const t = tally(o);
  return Boolean(o.error) || t.failed > 0 || t.linesLost > 0 || t.uncleanExits > 0;
}

/** The rollout table's figures, in column order. */
export const ROLLOUT_FIGURES: Figure[] = [
  { key: "sent", label: "sent", unit: "requests", scale: 1, better: "higher", integer: true },
  { key: "ok", label: "2xx", unit: "requests", scale: 1, better: "higher", integer: true },
  { key: "failed", label: "failed", unit: "requests", scale: 1, better: "lower", integer: true },
  { key: "non2xx", label: "non-2xx", unit: "requests", scale: 1, better: "lower", integer: true },
  { key: "connection_errors", label: "conn errors", unit: "requests", scale: 1, better: "lower", integer: true },
  { key: "lines_lost", label: "lines lost", unit: "lines", scale: 1, better: "lower", integer: true },
  { key: "keep_alive_rps", label: "keep-alive", unit: "req/s", scale: 1, better: "higher", integer: true },
  { key: "new_connection_rps", label: "new conn", unit: "req/s", scale: 1, better: "higher", integer: true },
  { key: "cycle", label: "cycle", unit: "s", scale: 1000, better: "lower" },
  { key: "unclean_exits", label: "non-zero exits", unit: "replicas", scale: 1, better: "lower", integer: true },
];

/** The figures the chart shows (the failure counts and the rates). */
export const CHART_FIGURES: Figure[] = ROLLOUT_FIGURES.filter((f) =>
  ["failed", "lines_lost", "keep_alive_rps", "cycle"].includes(f.key)
);

/** A table row of an outcome, named `name`. */
export function row(o: Outcome, name: string): Row {
  if (o.error && !o.keepAlive) return { name, skip: `${name}: ${o.error}`, figures: {} };
  const t = tally(o);
  const one = (n: number) => summarize([n]);
  return {
    name,
    figures: {
      sent: one(t.sent),
      ok: one(t.ok),
      failed: one(t.failed),
      non2xx: one(t.non2xx),
      connection_errors: one(t.connectionErrors),
      lines_lost: one(t.linesLost),
      keep_alive_rps: o.keepAlive && one(o.keepAlive.responses / o.keepAlive.seconds),
      new_connection_rps: o.newConnection &&
        one(sum(Object.values(o.newConnection.statuses)) / o.newConnection.seconds),
      cycle: summarize(o.cyclesMs),
      unclean_exits: one(t.uncleanExits),
    },
  };
}

function counted(entries: [string, number][]): string {
  const nonzero = entries.filter(([, n]) => n > 0);
  return nonzero.length ? nonzero.map(([k, n]) => `${k} ${n}`).join(", ") : "none";
}

/** The counts behind a row, one markdown bullet: errors by client and kind, lines, exit codes. */
export function details(o: Outcome, name: string): string {
  if (o.error && !o.keepAlive) return `- ${name}: not measured: ${o.error}`;
  const t = tally(o);
  const ka = o.keepAlive;
  const nc = o.newConnection;
  const exits = (codes: number[]) => codes.length ? codes.join(" ") : "none";
  const parts = [
    ka
      ? `keep-alive (${ka.tool}, ${ka.connections} connections): ${ka.sent} sent, ${ka.responses} answered, errors: ${
        counted([["non-2xx", ka.non2xx], ["connect", ka.connect], ["read", ka.read], ["write", ka.write], [
          "timeout",
          ka.timeout,
        ]])
      }, ${t.inFlightAtStop} in flight at the stop${t.vanished ? ` (${t.vanished} more than its connections)` : ""}`
      : "keep-alive: not run",
    nc
      ? `new connection per request (${nc.rate}/s offered): ${nc.sent} sent, statuses: ${
        counted(Object.entries(nc.statuses))
      }, errors: ${counted(Object.entries(nc.errors))}${nc.skipped ? `, ${nc.skipped} not sent (client limit)` : ""}${
        nc.firstOther ? ` (other: ${nc.firstOther})` : ""
      }`
      : "new connection: not run",
    `access lines of 200s ${o.linesLogged} for ${t.ok} 2xx answers (${t.linesLost} lost, ${t.linesUnanswered} not read by the client)`,
    `exit codes: rollout ${exits(o.exits)}; end of run ${exits(o.finalExits)}`,
  ];
  if (o.error) parts.push(`error: ${o.error}`);
  return `- ${name}: ${parts.join("; ")}`;
}
