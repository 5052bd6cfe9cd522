/**
 * The rollout's load balancer: a real HAProxy playing the Service, the endpoint controller's list and kube-proxy.
 * Round robin, keep-alive to the backends, an active `GET /readyz` check timed like the readinessProbe, no retries
 * and no redispatch. Layer 4 (`mode tcp`: a client connection stays on the replica it was opened to, as
 * kube-proxy's conntrack keeps it) or layer 7 (`mode http`: each request is balanced). Servers come and go through
 * the runtime API (the stats socket), as endpoint updates do.
 */

import type { RolloutSettings } from "./manifest.ts";

/** Layer 4 (tcp, connections pinned) or layer 7 (http, requests balanced). */
export type Mode = "l4" | "l7";

/** The HAProxy configuration: one frontend on 127.0.0.1:`port`, one backend with no server yet. */
export function haproxyConfig(mode: Mode, port: number, socket: string, probe: RolloutSettings["probe"]): string {
  return [
    "global",
    `  stats socket ${socket} mode 600 level admin`,
    "  nbthread 1",
    "  maxconn 8000",
    "",
    "defaults",
    mode === "l4" ? "  mode tcp" : "  mode http",
    "  timeout connect 2s",
    "  timeout client 60s",
    "  timeout server 60s",
    // The readinessProbe's timeoutSeconds.
    `  timeout check ${probe.timeoutMs}ms`,
    // Like kube-proxy, the balancer hides no failure: a failed connection or request is the client's to see.
    "  retries 0",
    "  no option redispatch",
    ...(mode === "l7"
      ? [
        // Keep-alive on both sides; idle server connections are reused for later requests.
        "  option http-keep-alive",
        "  http-reuse safe",
        "  retry-on none",
      ]
      : []),
    "",
    "frontend service",
    `  bind 127.0.0.1:${port}`,
    "  default_backend pods",
    "",
    "backend pods",
    "  balance roundrobin",
    // The readinessProbe: GET on its path, success for 200-399 as the kubelet counts it.
    "  option httpchk",
    `  http-check send meth GET uri ${probe.path} ver HTTP/1.1 hdr Host localhost`,
    "  http-check expect rstatus ^[23][0-9][0-9]$",
    "",
  ].join("\n");
}

/**
 * The `add server` arguments of a replica: weight 0 until its check state is set, checked every periodSeconds,
 * out after failureThreshold failed checks, in after successThreshold good ones.
 */
export function serverArguments(port: number, probe: RolloutSettings["probe"]): string {
  return `127.0.0.1:${port} weight 0 check inter ${probe.periodMs}ms fall ${probe.failureThreshold} rise ${probe.successThreshold}`;
}

/** One server's row of `show stat`: its status (UP, DOWN, MAINT, "UP 1/2"...) and last check result. */
export interface ServerStat {
  status: string;
  checkStatus: string;
  weight: number;
}

/** Parses the CSV of `show stat` into the servers of backend `backend` by name. */
export function parseStat(csv: string, backend = "pods"): Map<string, ServerStat> {
  const lines = csv.split("\n").filter((l) => l.trim());
  const header = lines[0]?.replace(/^# /, "").split(",") ?? [];
  const at = (name: string) => header.indexOf(name);
  const servers = new Map<string, ServerStat>();
  for (const line of lines.slice(1)) {
    const f = line.split(",");
    if (f[at("pxname")] !== backend || ["FRONTEND", "BACKEND"].includes(f[at("svname")])) continue;
    servers.set(f[at("svname")], {
      status: f[at("status")],
      checkStatus: f[at("check_status")],
      weight: Number(f[at("weight")]),
    });
  }
  return servers;
}

/** A running HAProxy with its runtime API. */
export class Balancer {
  readonly port: number;
  readonly mode: Mode;
  readonly config: string;
  /** HAProxy's own messages (server UP/DOWN with reasons), with ms since start. */
  readonly events: string[] = [];
  #dir: string;
  #socket: string;
  #probe: RolloutSettings["probe"];
  #child: Deno.ChildProcess;
  #stderr: Promise<void>;
  #started = performance.now();
  #exited = false;

  private constructor(mode: Mode, port: number, probe: RolloutSettings["probe"]) {
    this.mode = mode;
    this.port = port;
    this.#probe = probe;
    this.#dir = Deno.makeTempDirSync({ prefix: "rollout-haproxy-" });
    this.#socket = `${this.#dir}/admin.sock`;
    this.config = haproxyConfig(mode, port, this.#socket, probe);
    Deno.writeTextFileSync(`${this.#dir}/haproxy.cfg`, this.config);
    const child = new Deno.Command("haproxy", {
      args: ["-f", `${this.#dir}/haproxy.cfg`, "-db"],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.#child = child;
    child.status.then(() => this.#exited = true);
    this.#stderr = (async () => {
      let pending = "";
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        const parts = (pending + chunk).split("\n");
        pending = parts.pop() ?? "";
        for (const line of parts) {
          if (line.trim()) this.events.push(`${Math.round(performance.now() - this.#started)} ms ${line}`);
        }
      }
    })();
  }

  /** Starts HAProxy on 127.0.0.1:`port` and waits until its runtime API answers. */
  static async start(mode: Mode, port: number, probe: RolloutSettings["probe"]): Promise<Balancer> {
    const balancer = new Balancer(mode, port, probe);
    const deadline = performance.now() + 10_000;
    while (true) {
      try {
        await balancer.command("show info");
        return balancer;
      } catch (error) {
        if (balancer.#exited || performance.now() > deadline) {
          await balancer.stop();
          throw new Error(`haproxy did not start: ${error}; ${balancer.events.join("; ")}`);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  /** Sends one runtime API command and returns its answer. */
  async command(line: string): Promise<string> {
    const conn = await Deno.connect({ transport: "unix", path: this.#socket });
    try {
      await conn.write(new TextEncoder().encode(line + "\n"));
      let text = "";
      for await (const chunk of conn.readable.pipeThrough(new TextDecoderStream())) text += chunk;
      return text;
    } catch (error) {
      try {
        conn.close();
      } catch { /* closed by the stream */ }
      throw error;
    }
  }

  async #expect(line: string, ok: (answer: string) => boolean): Promise<void> {
    const answer = await this.command(line);
    if (!ok(answer)) throw new Error(`haproxy: ${line}: ${answer.trim()}`);
  }

  /**
   * Adds a replica as the endpoint controller would, but out of rotation until the balancer's own readiness
   * check passes: HAProxy 2.6 brings a server leaving maintenance UP before its first check, so the health is
   * forced down first (at weight 0, no traffic), and the check alone brings it UP.
   */
  async addServer(name: string, port: number): Promise<void> {
    const empty = (a: string) => a.trim() === "";
    await this.#expect(
      `add server pods/${name} ${serverArguments(port, this.#probe)}`,
      (a) => a.includes("registered"),
    );
    await this.#expect(`enable health pods/${name}`, empty);
    await this.#expect(`enable server pods/${name}`, empty);
    await this.#expect(`set server pods/${name} health down`, empty);
    await this.#expect(`set server pods/${name} weight 1`, empty);
  }

  /** The servers of the backend and their state. */
  async servers(): Promise<Map<string, ServerStat>> {
    return parseStat(await this.command("show stat"));
  }

  /** Waits until HAProxy reports the server UP (its check passed); fails after `ms` or when `gone` resolves. */
  async waitUp(name: string, ms: number, gone: Promise<unknown>): Promise<void> {
    let exited = false;
    gone.then(() => exited = true, () => exited = true);
    const deadline = performance.now() + ms;
    while (true) {
      const stat = (await this.servers()).get(name);
      if (stat?.status === "UP" && stat.weight > 0) return;
      if (exited) throw new Error(`replica ${name} exited before the balancer saw it ready`);
      if (performance.now() > deadline) {
        throw new Error(`replica ${name} not UP within ${ms} ms (status ${stat?.status}, check ${stat?.checkStatus})`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Removes a server that has exited, as the endpoint controller drops a deleted pod. */
  async removeServer(name: string): Promise<void> {
    await this.command(`disable server pods/${name}`);
    await this.command(`shutdown sessions server pods/${name}`);
    const deadline = performance.now() + 5000;
    while (true) {
      const answer = await this.command(`del server pods/${name}`);
      if (answer.includes("deleted")) return;
      if (performance.now() > deadline) throw new Error(`haproxy: del server pods/${name}: ${answer.trim()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Stops HAProxy and removes its files. */
  async stop(): Promise<void> {
    try {
      this.#child.kill("SIGTERM");
    } catch { /* already gone */ }
    await this.#child.status;
    await this.#stderr;
    Deno.removeSync(this.#dir, { recursive: true });
  }
}
