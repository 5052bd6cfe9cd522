/**
 * The real image (from `deno task image`) in a real container engine, through testcontainers.
 *
 * The engine: DOCKER_HOST when set, else a Docker or podman socket at its usual place, else a private
 * `podman system service` this file starts and stops. With none of them the tests fail, never skip.
 */

import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import { GenericContainer, getContainerRuntimeClient, type StartedTestContainer, Wait } from "testcontainers";
import deno from "./deno.json" with { type: "json" };
import { getFresh as get, type Record, RUN_ARGS, ServerProcess, sleep, waitUntil } from "./testing.ts";

/** The image under test. */
const IMAGE = Deno.env.get("SHIPSHAPE_IMAGE") ?? "localhost/shipshape:latest";
const USUAL_SOCKETS = ["/var/run/docker.sock", "/run/podman/podman.sock"];

/** A container handle of the engine's API (dockerode's Container, as testcontainers hands it out). */
type Container = ReturnType<Awaited<ReturnType<typeof getContainerRuntimeClient>>["container"]["getById"]>;

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Finds a Docker API, or starts a private podman service; returns how to stop what it started. */
async function engine(): Promise<{ stop(): Promise<void> }> {
  Deno.env.set("TESTCONTAINERS_RYUK_DISABLED", "true"); // the reaper image cannot be pulled without a registry
  if (Deno.env.get("DOCKER_HOST")) return { stop: () => Promise.resolve() };
  const socket = USUAL_SOCKETS.find(exists);
  if (socket) {
    Deno.env.set("DOCKER_HOST", `unix://${socket}`);
    return { stop: () => Promise.resolve() };
  }
  const dir = Deno.makeTempDirSync({ prefix: "shipshape-podman-" });
  const path = `${dir}/podman.sock`;
  let service: Deno.ChildProcess;
  try {
    service = new Deno.Command("podman", {
      args: ["system", "service", "--time=0", `unix://${path}`],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
  } catch (error) {
    throw new Error(
      "container tests need a container engine: DOCKER_HOST is unset, no Docker or podman socket exists, and " +
        `podman cannot be started (${error}). Run \`deno task test\`, which installs podman from apt on Debian`,
    );
  }
  const deadline = Date.now() + 15_000;
  while (!exists(path)) {
    if (Date.now() > deadline) {
      service.kill("SIGTERM");
      await service.status;
      throw new Error(`podman system service did not create ${path} within 15 s`);
    }
    await sleep(50);
  }
  Deno.env.set("DOCKER_HOST", `unix://${path}`);
  return {
    async stop() {
      service.kill("SIGTERM");
      await service.status;
      Deno.env.delete("DOCKER_HOST");
      Deno.removeSync(dir, { recursive: true });
    },
  };
}

/** A GenericContainer with a read-only root filesystem, as the manifests run it. */
class ReadOnlyContainer extends GenericContainer {
  constructor(image: string) {
    super(image);
    this.hostConfig.ReadonlyRootfs = true;
  }
}

function server(env: { [key: string]: string } = {}): GenericContainer {
  return new ReadOnlyContainer(IMAGE)
    .withEnvironment(env)
    .withExposedPorts(8080)
    .withWaitStrategy(Wait.forLogMessage(/"msg":"listening"/))
    .withStartupTimeout(20_000);
}

/** Splits the Docker API's multiplexed log stream (8-byte frame headers) into stdout and stderr. */
export function demux(buffer: Uint8Array): { stdout: string; stderr: string } {
  const decoder = new TextDecoder();
  const out = { stdout: "", stderr: "" };
  let offset = 0;
  while (offset + 8 <= buffer.length) {
    const kind = buffer[offset];
    const size = new DataView(buffer.buffer, buffer.byteOffset + offset + 4, 4).getUint32(0);
    const text = decoder.decode(buffer.subarray(offset + 8, offset + 8 + size));
    if (kind === 2) out.stderr += text;
    else out.stdout += text;
    offset += 8 + size;
  }
  return out;
}

/** The whole stdout and stderr of a container, running or stopped. */
async function logsOf(handle: Container): Promise<{ stdout: string; stderr: string }> {
  const raw = await handle.logs({ stdout: true, stderr: true, follow: false }) as unknown as ArrayBuffer;
  return demux(new Uint8Array(raw));
}

/** Stops the container with SIGTERM (keeping it), and returns its exit code, stop time and logs. */
async function stopAndCollect(container: StartedTestContainer) {
  const client = await getContainerRuntimeClient();
  const started = performance.now();
  await container.stop({ remove: false, timeout: 10_000 }); // milliseconds
  const stopMs = performance.now() - started;
  const handle = client.container.getById(container.getId());
  const info = await client.container.inspect(handle);
  const logs = await logsOf(handle);
  await client.container.remove(handle, { removeVolumes: true });
  return { exitCode: info.State.ExitCode, stopMs, ...logs };
}

function records(stdout: string): Record[] {
  return stdout.trimEnd().split("\n").map((line) => JSON.parse(line));
}

function url(container: StartedTestContainer, path: string): string {
  return `http://${container.getHost()}:${container.getMappedPort(8080)}${path}`;
}

Deno.test("Containerfile bakes in exactly the permissions of `deno task run`", () => {
  const containerfile = Deno.readTextFileSync(new URL("./Containerfile", import.meta.url));
  const flags = RUN_ARGS.filter((a) => a.startsWith("--allow-"));
  ok(flags.length === 3, RUN_ARGS.join(" "));
  for (
    const line of containerfile.split("\n").filter((l) => /^(RUN \["deno", "compile"|ENTRYPOINT|HEALTHCHECK)/.test(l))
  ) {
    if (!line.includes("deno")) continue; // the compiled target's lines carry no flags: they are baked in
    const array = JSON.parse(line.slice(line.indexOf("[")));
    deepStrictEqual(array.filter((a: string) => a.startsWith("--allow-")), flags, line);
  }
  match(containerfile, /^USER 65532:65532$/m);
  match(containerfile, /^STOPSIGNAL SIGTERM$/m);
  match(containerfile, /^ENV DENO_USE_CGROUPS=1/m);
  match(containerfile, /^FROM base AS compiled$/m);
  // The default target (the last stage) is the compiled one.
  equal(containerfile.trimEnd().split("\n").filter((l) => l.startsWith("FROM ")).at(-1), "FROM base AS compiled");
});

Deno.test("the image runs the server as a drain-aware, read-only, shell-less, non-root container", async (t) => {
  const running = await engine();
  try {
    const client = await getContainerRuntimeClient();
    const image = await client.container.dockerode.getImage(IMAGE).inspect().catch((error: Error) => {
      throw new Error(`image ${IMAGE} not found (build it with \`deno task image\`): ${error.message}`);
    });
    equal(image.Config.User, "65532:65532");
    equal(image.Config.Labels["org.opencontainers.image.version"], deno.version);

    await t.step("starts, answers GET / and /readyz, and logs JSON on stdout", async () => {
      const container = await server().start();
      const page = await get(url(container, "/"));
      equal(page.status, 200);
      match(page.body, /This is a demo page!/);
      match(page.body, new RegExp(`<code>${container.getId().slice(0, 12)}</code>`)); // the container's host name
      const ready = await get(url(container, "/readyz"));
      equal(ready.status, 200);
      const result = await stopAndCollect(container);
      equal(result.exitCode, 0);
      const lines = records(result.stdout);
      equal(lines[0].msg, "listening");
      equal(lines[0].pid, 1);
      deepStrictEqual(
        lines.filter((r) => r.msg === "access").map((r) => [r.path, r.status]),
        [["/", 200], ["/readyz", 200]],
      );
      equal(result.stderr, "");
    });

    await t.step("runs as uid 65532 on a read-only root, with no /bin/sh", async () => {
      const container = await server().start();
      try {
        const info = await client.container.inspect(client.container.getById(container.getId()));
        equal(info.HostConfig.ReadonlyRootfs, true);
        // The engine runs on this machine: read the process's real credentials and mounts from /proc.
        const status = Deno.readTextFileSync(`/proc/${info.State.Pid}/status`);
        match(status, /^Uid:\s+65532\s+65532\s+65532\s+65532$/m);
        match(status, /^Gid:\s+65532\s+65532\s+65532\s+65532$/m);
        const root = Deno.readTextFileSync(`/proc/${info.State.Pid}/mounts`).split("\n")
          .find((line) => line.split(" ")[1] === "/");
        match(root ?? "", /^\S+ \/ \S+ ro[,\s]/);
        for (const path of ["/bin/sh", "/bin", "/usr/bin/apt-get"]) {
          const missing = await container.copyArchiveFromContainer(path).then(() => "found", () => "missing");
          equal(missing, "missing", path);
        }
        const found = await container.copyArchiveFromContainer("/etc/passwd").then(() => "found", () => "missing");
        equal(found, "found", "the archive check does find files that exist");
      } finally {
        await stopAndCollect(container);
      }
    });

    await t.step("stop() ends an idle container by SIGTERM with exit code 0, far inside the kill timeout", async () => {
      const container = await server().start();
      const result = await stopAndCollect(container);
      equal(result.exitCode, 0);
      ok(result.stopMs < 5000, `stopped after ${result.stopMs} ms; a SIGKILL would take 10 s`);
      console.log(`idle stop took ${Math.round(result.stopMs)} ms`);
      deepStrictEqual(records(result.stdout).slice(-2).map((r) => r.msg), ["shutdown started", "shutdown complete"]);
    });

    await t.step("drains: in-flight /delay requests started before stop() all complete with 200", async () => {
      const container = await server().start();
      const inFlight = Array.from({ length: 5 }, () => get(url(container, "/delay/1.5")));
      // All five in flight (the /metrics request that asks counts itself) before the stop, whatever the engine's
      // port forwarding costs.
      await waitUntil(async () => {
        const metrics = (await get(url(container, "/metrics"))).body;
        return /^http_requests_in_flight 6$/m.test(metrics);
      });
      const result = await stopAndCollect(container);
      const answers = await Promise.all(inFlight);
      deepStrictEqual(answers.map((a) => a.status), [200, 200, 200, 200, 200]);
      equal(result.exitCode, 0);
      const lines = records(result.stdout);
      equal(lines.filter((r) => r.msg === "access" && r.path === "/delay/1.5" && r.status === 200).length, 5);
      equal(lines.find((r) => r.msg === "shutdown started")?.in_flight, 5);
    });

    await t.step("with SHUTDOWN_DELAY set, /readyz answers 503 during the delay", async () => {
      const container = await server({ SHUTDOWN_DELAY: "2" }).start();
      const before = await get(url(container, "/readyz"));
      equal(before.status, 200);
      const stopping = stopAndCollect(container);
      let during = 0;
      const deadline = Date.now() + 1500;
      while (Date.now() < deadline && during !== 503) {
        during = (await get(url(container, "/readyz"))).status;
        if (during !== 503) await sleep(50);
      }
      equal(during, 503);
      const live = await get(url(container, "/livez"));
      equal(live.status, 200);
      const result = await stopping;
      equal(result.exitCode, 0);
      ok(result.stopMs >= 1900, `the delay was kept: ${result.stopMs} ms`);
    });

    await t.step("`healthcheck` inside the container exits 0 while it serves, 1 on a port nobody serves", async () => {
      const container = await server().start();
      try {
        const entrypoint = image.Config.Entrypoint as string[];
        const result = await container.exec([...entrypoint, "healthcheck"]);
        equal(result.exitCode, 0, result.output);
        // Not port 1 or any other port fetch blocks outright: the check must fail for want of a listener.
        const wrongPort = await container.exec([...entrypoint, "healthcheck"], { env: { PORT: "8081" } });
        equal(wrongPort.exitCode, 1, "nothing listens on port 8081: the check must fail");
        match(wrongPort.output, /^shipshape: healthcheck: http:\/\/127\.0\.0\.1:8081\/livez failed: /);
        equal(/blocked/i.test(wrongPort.output), false, wrongPort.output);
      } finally {
        await stopAndCollect(container);
      }
    });

    await t.step("a bad setting (PORT=eighty) exits 2 with its one line in the logs", async () => {
      // Straight through the engine's API: testcontainers' start() waits for ports a failed start never binds.
      const handle = await client.container.create({
        Image: IMAGE,
        Env: ["PORT=eighty"],
        HostConfig: { ReadonlyRootfs: true },
      });
      try {
        await client.container.start(handle);
        const { StatusCode } = await handle.wait();
        equal(StatusCode, 2);
        const logs = await logsOf(handle);
        equal(logs.stdout, "");
        equal(logs.stderr, 'shipshape: PORT="eighty" is not valid: expected an integer from 0 to 65535\n');
      } finally {
        await client.container.remove(handle, { removeVolumes: true });
      }
    });
  } finally {
    // A failed step may leave its container behind (there is no reaper): remove what this run started.
    const client = await getContainerRuntimeClient();
    for (const info of await client.container.dockerode.listContainers({ all: true })) {
      if (info.Image === IMAGE || info.Image === IMAGE.replace(/^localhost\//, "")) {
        await client.container.dockerode.getContainer(info.Id).remove({ force: true, v: true });
      }
    }
    await running.stop();
  }
});

Deno.test("deno task compile builds ./shipshape where a denort can be had, else stops with one line saying how", async () => {
  const root = new URL(".", import.meta.url).pathname;
  const out = await new Deno.Command("bash", { args: ["tools/compile.sh"], cwd: root, stdin: "null" }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  if (!out.success) {
    // This machine cannot fetch denort (no route to dl.deno.land, DENORT_BIN unset): one clear line.
    equal(Deno.env.get("DENORT_BIN"), undefined, stderr);
    const lines = stderr.trimEnd().split("\n");
    equal(lines.length, 1, stderr);
    match(lines[0], /^compile: deno compile needs denort \d+\.\d+\.\d+, .*set DENORT_BIN to a denort .* binary/);
    return;
  }
  // Where it works: the executable serves, answers its own healthcheck and drains on SIGTERM.
  const server = await ServerProcess.start({}, [`${root}shipshape`]);
  equal((await get(server.url("/livez"))).status, 200);
  const check = await new Deno.Command(`${root}shipshape`, {
    args: ["healthcheck"],
    env: { PORT: String(server.port), HOST: "127.0.0.1" },
    clearEnv: true,
  }).output();
  equal(check.code, 0);
  server.kill("SIGTERM");
  equal(await server.exit(), 0);
});
