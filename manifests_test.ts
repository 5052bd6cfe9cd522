/**
 * manifests/: strict validation against the Kubernetes API types, the Pod Security "restricted" profile field
 * by field, cross-checks against the server's own code, and a real run with `podman kube play`.
 */

import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import * as k8s from "@kubernetes/client-node";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import { Service } from "kubernetes-models/v1/Service";
import YAML from "yaml";
import deno from "./deno.json" with { type: "json" };
import { loadConfig, parseDuration, SETTINGS, VARIABLES } from "./config.ts";
import { createHandler } from "./handler.ts";
import { Logger } from "./logging.ts";
import { MemoryWriter } from "./testing.ts";
import { Metrics } from "./metrics.ts";
import { freePort } from "./testing.ts";
import { quantityBytes } from "./bench/memory.ts";
import { summarize } from "./bench/stats.ts";

// deno-lint-ignore no-explicit-any
type Obj = any;

const DIR = new URL("./manifests/", import.meta.url);
/** The image `podman kube play` runs in place of the manifest's (SHIPSHAPE_IMAGE, as the container tests read it). */
const IMAGE = Deno.env.get("SHIPSHAPE_IMAGE") ?? "localhost/shipshape:latest";

/** The schema (kubernetes-models, generated from the OpenAPI spec) of each kind, by apiVersion and kind. */
const SCHEMAS: { [key: string]: { new (data: Obj): { validate(): void } } } = {
  "apps/v1 Deployment": Deployment,
  "v1 Service": Service,
  "policy/v1 PodDisruptionBudget": PodDisruptionBudget,
  "autoscaling/v2 HorizontalPodAutoscaler": HorizontalPodAutoscaler,
  "networking.k8s.io/v1 NetworkPolicy": NetworkPolicy,
};

/** Every manifest file, parsed: one object per file. */
function loadManifests(): Map<string, Obj> {
  const objects = new Map<string, Obj>();
  for (const entry of [...Deno.readDirSync(DIR)].sort((a, b) => a.name.localeCompare(b.name))) {
    const docs = YAML.parseAllDocuments(Deno.readTextFileSync(new URL(entry.name, DIR)));
    equal(docs.length, 1, `${entry.name}: one object per file`);
    for (const doc of docs) equal(doc.errors.length, 0, `${entry.name}: ${doc.errors}`);
    objects.set(entry.name, docs[0].toJS());
  }
  return objects;
}

function byKind(objects: Map<string, Obj>, kind: string): Obj {
  const found = [...objects.values()].filter((o) => o.kind === kind);
  equal(found.length, 1, `exactly one ${kind}`);
  return found[0];
}

type AttributeMap = { baseName: string; type: string }[];
const MODELS = k8s as unknown as { [name: string]: { getAttributeTypeMap?(): AttributeMap } | undefined };

/**
 * Every field of `value` must be a field of `type` in the official client's models (@kubernetes/client-node,
 * generated from the same OpenAPI spec), recursively. kubernetes-models accepts unknown fields; this does not.
 */
export function unknownFields(value: unknown, type: string, path: string): string[] {
  if (value === null || value === undefined) return [];
  const array = /^Array<(.+)>$/.exec(type);
  if (array) {
    if (!Array.isArray(value)) return [`${path}: expected a list`];
    return value.flatMap((item, i) => unknownFields(item, array[1], `${path}[${i}]`));
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    if (typeof value !== "object") return [`${path}: expected a map`];
    return Object.entries(value).flatMap(([k, v]) => unknownFields(v, map[1], `${path}.${k}`));
  }
  const attributes = MODELS[type]?.getAttributeTypeMap?.();
  if (!attributes) return []; // a scalar: types are kubernetes-models' job
  if (typeof value !== "object" || Array.isArray(value)) return [`${path}: expected an object (${type})`];
  const fields = new Map(attributes.map((a) => [a.baseName, a.type]));
  return Object.entries(value).flatMap(([key, v]) => {
    const fieldType = fields.get(key);
    return fieldType === undefined
      ? [`${path}.${key}: unknown field (${type} has no "${key}")`]
      : unknownFields(v, fieldType, `${path}.${key}`);
  });
}

/** The client model's type name of a top-level object: apps/v1 Deployment -> V1Deployment. */
function modelType(object: Obj): string {
  const version = String(object.apiVersion).split("/").at(-1)!;
  return version[0].toUpperCase() + version.slice(1) + object.kind;
}

/** Everything wrong with one object: schema errors, unknown fields. Empty when it is valid. */
export function problems(object: Obj): string[] {
  const Schema = SCHEMAS[`${object.apiVersion} ${object.kind}`];
  if (!Schema) return [`${object.apiVersion} ${object.kind}: no schema known for this kind`];
  const found: string[] = [];
  try {
    new Schema(structuredClone(object)).validate();
  } catch (error) {
    found.push(`schema: ${error instanceof Error ? error.message : error}`);
  }
  return [...found, ...unknownFields(object, modelType(object), object.kind)];
}

const SAFE_VOLUME_TYPES = [
  "configMap",
  "csi",
  "downwardAPI",
  "emptyDir",
  "ephemeral",
  "persistentVolumeClaim",
  "projected",
  "secret",
];

/**
 * The Pod Security "restricted" profile, field by field, plus a read-only root filesystem. Each violation
 * names its field.
 */
export function restrictedViolations(pod: Obj, where = "spec.template.spec"): string[] {
  const v: string[] = [];
  const podSc = pod.securityContext ?? {};
  for (const field of ["hostNetwork", "hostPID", "hostIPC"]) {
    if (pod[field] === true) v.push(`${where}.${field} must not be true`);
  }
  for (const [i, volume] of (pod.volumes ?? []).entries()) {
    const type = Object.keys(volume).find((k) => k !== "name");
    if (!type || !SAFE_VOLUME_TYPES.includes(type)) v.push(`${where}.volumes[${i}].${type} is not an allowed type`);
  }
  if ((podSc.sysctls ?? []).length) v.push(`${where}.securityContext.sysctls must be empty`);
  if (podSc.runAsUser === 0) v.push(`${where}.securityContext.runAsUser must not be 0`);
  for (const field of ["runAsUser", "runAsGroup"]) {
    if (!Number.isInteger(podSc[field]) || podSc[field] === 0) {
      v.push(`${where}.securityContext.${field} must be a numeric non-root id`);
    }
  }
  const lists = ["initContainers", "containers", "ephemeralContainers"] as const;
  for (const list of lists) {
    for (const [i, c] of (pod[list] ?? []).entries()) {
      const at = `${where}.${list}[${i}]`;
      const sc = c.securityContext ?? {};
      if (sc.privileged === true) v.push(`${at}.securityContext.privileged must not be true`);
      if (sc.allowPrivilegeEscalation !== false) v.push(`${at}.securityContext.allowPrivilegeEscalation must be false`);
      if (!(sc.capabilities?.drop ?? []).includes("ALL")) {
        v.push(`${at}.securityContext.capabilities.drop must hold ALL`);
      }
      for (const cap of sc.capabilities?.add ?? []) {
        if (cap !== "NET_BIND_SERVICE") v.push(`${at}.securityContext.capabilities.add must not hold ${cap}`);
      }
      if ((sc.runAsNonRoot ?? podSc.runAsNonRoot) !== true) v.push(`${at}.securityContext.runAsNonRoot must be true`);
      if ((sc.runAsUser ?? podSc.runAsUser) === 0) v.push(`${at}.securityContext.runAsUser must not be 0`);
      const seccomp = (sc.seccompProfile ?? podSc.seccompProfile)?.type;
      if (seccomp !== "RuntimeDefault" && seccomp !== "Localhost") {
        v.push(`${at}.securityContext.seccompProfile.type must be RuntimeDefault or Localhost`);
      }
      if (sc.procMount !== undefined && sc.procMount !== "Default") v.push(`${at}.securityContext.procMount`);
      if (sc.readOnlyRootFilesystem !== true) v.push(`${at}.securityContext.readOnlyRootFilesystem must be true`);
      for (const [j, port] of (c.ports ?? []).entries()) {
        if (port.hostPort) v.push(`${at}.ports[${j}].hostPort must not be set`);
      }
    }
  }
  return v;
}

Deno.test("manifests/ holds plain YAML, one object per file, and nothing kubectl apply -f would trip on", () => {
  const objects = loadManifests();
  deepStrictEqual([...objects.keys()], [
    "deployment.yaml",
    "hpa.yaml",
    "networkpolicy.yaml",
    "pdb.yaml",
    "service.yaml",
  ]);
  deepStrictEqual([...objects.values()].map((o) => o.kind).sort(), [
    "Deployment",
    "HorizontalPodAutoscaler",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "Service",
  ]);
});

Deno.test("every manifest validates against its Kubernetes API schema with no unknown field", () => {
  for (const [file, object] of loadManifests()) deepStrictEqual(problems(object), [], file);
});

Deno.test("problems() catches a planted typo, a misplaced field and a bad enum, naming the path", () => {
  const deployment = byKind(loadManifests(), "Deployment");
  const typo = structuredClone(deployment);
  typo.spec.template.spec.containers[0].readinesProbe = typo.spec.template.spec.containers[0].readinessProbe;
  deepStrictEqual(problems(typo), [
    'Deployment.spec.template.spec.containers[0].readinesProbe: unknown field (V1Container has no "readinesProbe")',
  ]);
  const misplaced = structuredClone(deployment);
  misplaced.spec.template.spec.securityContext.readOnlyRootFilesystem = true; // a container-only field
  deepStrictEqual(problems(misplaced), [
    "Deployment.spec.template.spec.securityContext.readOnlyRootFilesystem: unknown field " +
    '(V1PodSecurityContext has no "readOnlyRootFilesystem")',
  ]);
  const badEnum = structuredClone(deployment);
  badEnum.spec.template.spec.containers[0].imagePullPolicy = "Sometimes";
  const found = problems(badEnum);
  equal(found.length, 1);
  match(found[0], /^schema: .*imagePullPolicy must be equal to one of the allowed values/);
  const service = structuredClone(byKind(loadManifests(), "Service"));
  service.spec.ports[0].targetPort = { bad: true };
  ok(problems(service).length > 0, "a targetPort that is neither int nor string");
});

Deno.test("the Deployment meets the Pod Security restricted profile, field by field", () => {
  const pod = byKind(loadManifests(), "Deployment").spec.template.spec;
  deepStrictEqual(restrictedViolations(pod), []);
  equal(pod.automountServiceAccountToken, false);
});

Deno.test("restrictedViolations() names each field that breaks the profile", () => {
  const pod = structuredClone(byKind(loadManifests(), "Deployment").spec.template.spec);
  const sc = pod.containers[0].securityContext;
  sc.allowPrivilegeEscalation = true;
  sc.capabilities = { drop: ["NET_RAW"], add: ["SYS_ADMIN"] };
  sc.readOnlyRootFilesystem = false;
  pod.securityContext.runAsNonRoot = false;
  delete pod.securityContext.seccompProfile;
  pod.securityContext.runAsUser = 0;
  pod.hostNetwork = true;
  pod.volumes = [{ name: "host", hostPath: { path: "/" } }];
  pod.containers[0].ports[0].hostPort = 80;
  const c = "spec.template.spec.containers[0]";
  deepStrictEqual(restrictedViolations(pod), [
    "spec.template.spec.hostNetwork must not be true",
    "spec.template.spec.volumes[0].hostPath is not an allowed type",
    "spec.template.spec.securityContext.runAsUser must not be 0",
    "spec.template.spec.securityContext.runAsUser must be a numeric non-root id",
    `${c}.securityContext.allowPrivilegeEscalation must be false`,
    `${c}.securityContext.capabilities.drop must hold ALL`,
    `${c}.securityContext.capabilities.add must not hold SYS_ADMIN`,
    `${c}.securityContext.runAsUser must not be 0`,
    `${c}.securityContext.seccompProfile.type must be RuntimeDefault or Localhost`,
    `${c}.securityContext.readOnlyRootFilesystem must be true`,
    `${c}.ports[0].hostPort must not be set`,
  ]);
});

/** The real handler, as a pod runs it (its log kept in memory). */
function podHandler() {
  return createHandler({
    logger: new Logger({ writer: new MemoryWriter() }),
    metrics: new Metrics({ version: "x", startTimeSeconds: 0, rss: () => 0 }),
    state: { draining: false },
    version: "x",
    hostname: "h",
  });
}

Deno.test("the probe paths are routes the handler answers with 200", async () => {
  const container = byKind(loadManifests(), "Deployment").spec.template.spec.containers[0];
  const handler = podHandler();
  const ports = container.ports.map((p: Obj) => p.containerPort);
  for (const probe of ["readinessProbe", "livenessProbe", "startupProbe"]) {
    if (!container[probe]) continue;
    const { path, port } = container[probe].httpGet;
    ok(ports.includes(port), `${probe} port ${port} is a container port`);
    const res = await handler(new Request(`http://pod${path}`));
    equal(res.status, 200, `${probe} ${path}`);
    await res.body?.cancel();
  }
  equal(container.readinessProbe.httpGet.path, "/readyz");
  equal(container.livenessProbe.httpGet.path, "/livez");
});

Deno.test("the pod's Prometheus annotations name the container's port and a path that serves metrics", async () => {
  const template = byKind(loadManifests(), "Deployment").spec.template;
  const annotations = template.metadata.annotations;
  equal(annotations["prometheus.io/scrape"], "true");
  const ports = template.spec.containers[0].ports.map((p: Obj) => String(p.containerPort));
  ok(
    ports.includes(annotations["prometheus.io/port"]),
    `port ${annotations["prometheus.io/port"]} is a container port`,
  );
  const handler = podHandler();
  const res = await handler(new Request(`http://pod${annotations["prometheus.io/path"]}`));
  equal(res.status, 200);
  match(await res.text(), /^# TYPE http_requests_total counter$/m);
});

Deno.test("every env var is one config.ts reads, and its value passes config.ts's validation", () => {
  const env = byKind(loadManifests(), "Deployment").spec.template.spec.containers[0].env;
  const values = Object.fromEntries(env.map((e: Obj) => [e.name, e.value]));
  for (const name of Object.keys(values)) ok((VARIABLES as string[]).includes(name), `${name} is a setting`);
  loadConfig((name) => values[name]); // throws ConfigError naming the variable on a bad value
  equal(env.length, Object.keys(values).length, "no variable set twice");
});

Deno.test("terminationGracePeriodSeconds covers SHUTDOWN_DELAY + SHUTDOWN_TIMEOUT + a margin", () => {
  const spec = byKind(loadManifests(), "Deployment").spec.template.spec;
  const env = Object.fromEntries(spec.containers[0].env.map((e: Obj) => [e.name, e.value]));
  const delay = parseDuration(env.SHUTDOWN_DELAY ?? SETTINGS.SHUTDOWN_DELAY.default)!;
  const timeout = parseDuration(env.SHUTDOWN_TIMEOUT ?? SETTINGS.SHUTDOWN_TIMEOUT.default)!;
  ok(delay >= 2000, "a drain delay of some seconds, for endpoint removal to propagate");
  const marginMs = spec.terminationGracePeriodSeconds * 1000 - delay - timeout;
  ok(marginMs >= 2000, `margin of ${marginMs} ms`);
});

Deno.test("selectors match the pod template's labels; the Service targets a named container port", () => {
  const objects = loadManifests();
  const deployment = byKind(objects, "Deployment");
  const labels = deployment.spec.template.metadata.labels;
  const selector = deployment.spec.selector.matchLabels;
  deepStrictEqual(Object.keys(selector).sort(), ["app.kubernetes.io/instance", "app.kubernetes.io/name"]);
  for (const [k, v] of Object.entries(selector)) equal(labels[k], v, k);
  const service = byKind(objects, "Service");
  deepStrictEqual(service.spec.selector, selector);
  deepStrictEqual(byKind(objects, "PodDisruptionBudget").spec.selector.matchLabels, selector);
  deepStrictEqual(byKind(objects, "NetworkPolicy").spec.podSelector.matchLabels, selector);
  for (const constraint of deployment.spec.template.spec.topologySpreadConstraints) {
    deepStrictEqual(constraint.labelSelector.matchLabels, selector);
  }
  const ports = deployment.spec.template.spec.containers[0].ports;
  const named = ports.find((p: Obj) => p.name === service.spec.ports[0].targetPort);
  ok(named, `targetPort ${service.spec.ports[0].targetPort} names a container port`);
  equal(named.containerPort, 8080);
  equal(byKind(objects, "NetworkPolicy").spec.ingress[0].ports[0].port, named.containerPort);
  const hpa = byKind(objects, "HorizontalPodAutoscaler");
  equal(hpa.spec.scaleTargetRef.name, deployment.metadata.name);
  equal(hpa.spec.minReplicas, 2);
  for (const object of objects.values()) {
    equal(object.metadata.labels["app.kubernetes.io/version"], deno.version, `${object.kind} version label`);
  }
});

Deno.test("the HPA alone sets the replica count, with at least the 2 pods the PDB's maxUnavailable 1 assumes", () => {
  const objects = loadManifests();
  const deployment = byKind(objects, "Deployment");
  equal("replicas" in deployment.spec, false, "a replicas field would reset the HPA's choice on every apply");
  const hpa = byKind(objects, "HorizontalPodAutoscaler");
  ok(hpa.spec.minReplicas >= 2, `minReplicas ${hpa.spec.minReplicas}`);
  equal(byKind(objects, "PodDisruptionBudget").spec.maxUnavailable, 1);
});

Deno.test("every spread constraint counts only the pods of the same rollout (matchLabelKeys pod-template-hash)", () => {
  const constraints = byKind(loadManifests(), "Deployment").spec.template.spec.topologySpreadConstraints;
  deepStrictEqual(constraints.map((c: Obj) => c.topologyKey).sort(), [
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
  ]);
  for (const constraint of constraints) deepStrictEqual(constraint.matchLabelKeys, ["pod-template-hash"]);
});

/** Idle keep-alive connections the memory budget holds beside MAX_IN_FLIGHT requests (docs/kubernetes.md). */
const IDLE_CONNECTION_ALLOWANCE = 500;

Deno.test("the memory request holds the budget measured by deno task memory; the limit keeps a fifth spare", () => {
  const container = byKind(loadManifests(), "Deployment").spec.template.spec.containers[0];
  const env = Object.fromEntries(container.env.map((e: Obj) => [e.name, e.value]));
  const maxInFlight = Number(env.MAX_IN_FLIGHT ?? SETTINGS.MAX_IN_FLIGHT.default);
  // The process's RSS: the binary's mapped pages counted in full, as if the pod were the first to read them.
  const runs: Obj[] = JSON.parse(Deno.readTextFileSync(new URL("./bench/results/memory.json", import.meta.url)))
    .process;
  const median = (values: number[]) => summarize(values)!.median;
  const cost = (kind: string) =>
    median(
      runs.filter((r) => r.kind === kind).map((r) => (r.first.peak.rss - r.first.before.rss) / r.first.connections),
    );
  const idle = median(runs.map((r) => r.idle.rss));
  // A flood at twice MAX_IN_FLIGHT holds as many refused requests beside the admitted ones, each costing about what a
  // connection does while it is answered (flood_test.ts measured 23 KiB).
  const budget = idle + maxInFlight * (cost("inflight") + cost("idle")) + IDLE_CONNECTION_ALLOWANCE * cost("idle");
  const request = quantityBytes(container.resources.requests.memory);
  const limit = quantityBytes(container.resources.limits.memory);
  const mib = (bytes: number) => `${(bytes / 1048576).toFixed(1)} MiB`;
  ok(request >= budget, `request ${mib(request)} holds the budget ${mib(budget)} (idle ${mib(idle)})`);
  ok(request <= 0.8 * limit, `request ${mib(request)} is at most four fifths of the limit ${mib(limit)}`);
});

Deno.test("the image's user is the pod's runAsUser and runAsGroup", () => {
  const containerfile = Deno.readTextFileSync(new URL("./Containerfile", import.meta.url));
  const [, user, group] = /^USER (\d+):(\d+)$/m.exec(containerfile) ?? [];
  const sc = byKind(loadManifests(), "Deployment").spec.template.spec.securityContext;
  equal(sc.runAsUser, Number(user));
  equal(sc.runAsGroup, Number(group));
});

async function podman(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command("podman", { args, stdin: "null" }).output().catch((error) => {
    throw new Error(`podman ${args[0]}: podman is needed (run \`deno task test\`, which installs it): ${error}`);
  });
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

Deno.test("podman kube play runs deployment.yaml: uid 65532, read-only root, ready, JSON logs, clean stop", async () => {
  const deployment = byKind(loadManifests(), "Deployment");
  deployment.spec.replicas = 1;
  const port = freePort();
  deployment.spec.template.spec.containers[0].ports[0].hostPort = port;
  deployment.spec.template.spec.containers[0].image = IMAGE;
  const file = Deno.makeTempFileSync({ suffix: ".yaml" });
  Deno.writeTextFileSync(file, YAML.stringify(deployment));
  let pod = "";
  let ctr = "";
  try {
    const play = await podman("kube", "play", file);
    equal(play.code, 0, play.stderr);
    // "Pod:\n<id>\nContainer:\n<id>" (podman 4.3); the names podman derives differ between versions.
    pod = /Pod:\s+([0-9a-f]{64})/.exec(play.stdout)?.[1] ?? "";
    ctr = /Container:\s+([0-9a-f]{64})/.exec(play.stdout)?.[1] ?? "";
    ok(pod && ctr, play.stdout);
    const inspect = JSON.parse((await podman("inspect", ctr)).stdout)[0];
    const pid = inspect.State.Pid;
    match(Deno.readTextFileSync(`/proc/${pid}/status`), /^Uid:\s+65532\s+65532\s+65532\s+65532$/m);
    const root = Deno.readTextFileSync(`/proc/${pid}/mounts`).split("\n").find((l) => l.split(" ")[1] === "/");
    match(root ?? "", /^\S+ \/ \S+ ro[,\s]/);
    equal(inspect.HostConfig.ReadonlyRootfs, true);

    let status = 0;
    const deadline = Date.now() + 15_000;
    while (status !== 200 && Date.now() < deadline) {
      status = await fetch(`http://127.0.0.1:${port}/readyz`).then(async (r) => {
        await r.body?.cancel();
        return r.status;
      }, () => 0);
      if (status !== 200) await new Promise((r) => setTimeout(r, 100));
    }
    equal(status, 200, `/readyz on host port ${port}`);

    // Stop the pod the way `kube down` does (SIGTERM, then the stop timeout), keeping the container to read.
    const stop = await podman("pod", "stop", pod);
    equal(stop.code, 0, stop.stderr);
    const exited = JSON.parse((await podman("inspect", ctr)).stdout)[0];
    equal(exited.State.ExitCode, 0);
    const logs = (await podman("logs", ctr)).stdout.trimEnd().split("\n").map((l) => JSON.parse(l));
    equal(logs[0].msg, "listening");
    ok(logs.some((r) => r.msg === "access" && r.path === "/readyz" && r.status === 200));
    const started = logs.find((r) => r.msg === "shutdown started");
    equal(started?.delay_ms, 5000, "SHUTDOWN_DELAY from the manifest reached the app");
    equal(logs.at(-1).msg, "shutdown complete");
  } finally {
    const down = await podman("kube", "down", file);
    Deno.removeSync(file);
    equal(down.code, 0, down.stderr);
  }
  equal((await podman("pod", "exists", pod)).code, 1, "kube down removed the pod");
  equal((await podman("container", "exists", ctr)).code, 1, "kube down removed the container");
});
