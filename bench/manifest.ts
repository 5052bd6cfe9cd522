/**
 * What the rollout takes from manifests/deployment.yaml (read from the file, never copied): replicas, the
 * RollingUpdate strategy, the readinessProbe, terminationGracePeriodSeconds and the SHUTDOWN_* settings, with
 * the times scaled by one factor for short runs.
 */

import YAML from "yaml";

/** The Deployment's rollout settings, times in milliseconds, already multiplied by `scale`. */
export interface RolloutSettings {
  /** The factor every time below was multiplied by (1: the manifest's own times). */
  scale: number;
  replicas: number;
  maxSurge: number;
  maxUnavailable: number;
  /** readinessProbe: path, periodSeconds, failureThreshold, successThreshold, timeoutSeconds. */
  probe: { path: string; periodMs: number; failureThreshold: number; successThreshold: number; timeoutMs: number };
  /** terminationGracePeriodSeconds, scaled and rounded up to whole seconds (podman stop -t takes seconds). */
  graceSeconds: number;
  /** The container's environment from the manifest, SHUTDOWN_DELAY and SHUTDOWN_TIMEOUT scaled. */
  env: { [name: string]: string };
  shutdownDelayMs: number;
  shutdownTimeoutMs: number;
}

function need<T>(value: T | undefined | null, what: string): T {
  if (value === undefined || value === null) throw new Error(`manifests/deployment.yaml has no ${what}`);
  return value;
}

/** A rolling-update count (an integer or a percentage of the replicas), as the Deployment controller reads it. */
function count(value: number | string | undefined, replicas: number, roundUp: boolean, fallback: string): number {
  const text = String(value ?? fallback);
  if (/^\d+$/.test(text)) return Number(text);
  const percent = /^(\d+)%$/.exec(text);
  if (!percent) throw new Error(`manifests/deployment.yaml: bad rolling-update value ${text}`);
  const exact = (Number(percent[1]) * replicas) / 100;
  return roundUp ? Math.ceil(exact) : Math.floor(exact);
}

/** Seconds of a SHUTDOWN_* value ("5", "0.5", "5s" or "250ms", as config.ts accepts). */
function seconds(text: string, name: string): number {
  const match = /^(\d+(?:\.\d+)?|\.\d+)(ms|s)?$/.exec(text);
  if (!match) throw new Error(`manifests/deployment.yaml: ${name} is not a duration: ${text}`);
  return match[2] === "ms" ? Number(match[1]) / 1000 : Number(match[1]);
}

/**
 * Reads the rollout settings from the text of a Deployment manifest, times multiplied by `scale`. A Deployment that
 * leaves its count to a HorizontalPodAutoscaler has no `replicas`: `minReplicas` (the HPA's) stands for it.
 */
export function rolloutSettings(yamlText: string, scale = 1, minReplicas?: number): RolloutSettings {
  if (!(scale > 0)) throw new Error(`scale must be above 0, not ${scale}`);
  const deployment = YAML.parse(yamlText);
  if (deployment?.kind !== "Deployment") throw new Error("manifests/deployment.yaml is not a Deployment");
  const spec = need(deployment.spec, "spec");
  const replicas = Number(spec.replicas ?? minReplicas ?? 1);
  const strategy = spec.strategy ?? {};
  if ((strategy.type ?? "RollingUpdate") !== "RollingUpdate") {
    throw new Error(`manifests/deployment.yaml: strategy ${strategy.type} is not RollingUpdate`);
  }
  const rolling = strategy.rollingUpdate ?? {};
  const pod = need(spec.template?.spec, "spec.template.spec");
  const container = need(pod.containers?.[0], "container");
  const probe = need(container.readinessProbe, "readinessProbe");
  const env: { [name: string]: string } = {};
  for (const e of container.env ?? []) if (typeof e.value === "string") env[e.name] = e.value;
  const delay = seconds(env.SHUTDOWN_DELAY ?? "0", "SHUTDOWN_DELAY") * scale;
  const timeout = seconds(env.SHUTDOWN_TIMEOUT ?? "10", "SHUTDOWN_TIMEOUT") * scale;
  // Milliseconds as SHUTDOWN_* values: exact for any scale, and accepted by config.ts.
  env.SHUTDOWN_DELAY = `${Math.round(delay * 1000)}ms`;
  env.SHUTDOWN_TIMEOUT = `${Math.round(timeout * 1000)}ms`;
  return {
    scale,
    replicas,
    maxSurge: count(rolling.maxSurge, replicas, true, "25%"),
    maxUnavailable: count(rolling.maxUnavailable, replicas, false, "25%"),
    probe: {
      path: need(probe.httpGet?.path, "readinessProbe.httpGet.path"),
      // Kubernetes' defaults where the manifest says nothing.
      periodMs: Math.round(Number(probe.periodSeconds ?? 10) * 1000 * scale),
      failureThreshold: Number(probe.failureThreshold ?? 3),
      successThreshold: Number(probe.successThreshold ?? 1),
      timeoutMs: Math.round(Number(probe.timeoutSeconds ?? 1) * 1000 * scale),
    },
    graceSeconds: Math.ceil(Number(pod.terminationGracePeriodSeconds ?? 30) * scale),
    env,
    shutdownDelayMs: Math.round(delay * 1000),
    shutdownTimeoutMs: Math.round(timeout * 1000),
  };
}

/** The rollout settings of this repository's manifests/deployment.yaml, at hpa.yaml's minReplicas. */
export function deploymentSettings(scale = 1): RolloutSettings {
  const hpa = YAML.parse(Deno.readTextFileSync(new URL("../manifests/hpa.yaml", import.meta.url)));
  const text = Deno.readTextFileSync(new URL("../manifests/deployment.yaml", import.meta.url));
  return rolloutSettings(text, scale, need(hpa?.spec?.minReplicas, "HPA minReplicas (manifests/hpa.yaml)"));
}
