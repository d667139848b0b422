// A real deployment of pods for the live tests: the pod binary (GUILD_GATEWAY_BIN, default
// ../../target/debug/guild-gateway) replays the sample stream, one SQLite file per pod, on free
// ports of 127.0.0.1. Only the children started here are ever stopped, by their own handles.

import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { GatewayClient, toObjects, type GatewayClientOptions } from "../src/index.js";

// Compiled to dist/test/, two levels below the package.
export const packageDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const fixtures = path.resolve(packageDir, "../../../shared/fixtures");
export const BIN = path.resolve(packageDir, process.env["GUILD_GATEWAY_BIN"] ?? "../../target/debug/guild-gateway");
export const EVENTS = path.join(fixtures, "events.sample.ndjson");

export interface Expected {
  guilds: string[];
  message_stats: { guild_id: string; message_id: string }[];
  message_cache: { guild_id: string; message_id: string }[];
  channel_info: { id: string; guild_id: string; name: string | null; category: string | null }[];
}

export const expected = JSON.parse(readFileSync(path.join(fixtures, "events.sample.expected.json"), "utf8")) as Expected;
export const countOf = (guild: string) => expected.message_stats.filter((r) => r.guild_id === guild).length;

const COUNT_SQL = 'select count(*) as "n" from "message_stats" where "guild_id" = ?';
export const countStatement = (guild: string) => ({ sql: COUNT_SQL, parameters: [guild] });

/** Whether nothing listens on 127.0.0.1:port right now. */
function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/** The first of `count` consecutive free ports: `{ordinal+BASE}` needs them consecutive. */
export async function freePorts(count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 40_000);
    let free = true;
    for (let port = base; port < base + count && free; port++) free = await portIsFree(port);
    if (free) return base;
  }
  throw new Error(`no ${count} consecutive free ports found on 127.0.0.1`);
}

export interface Pod {
  ordinal: number;
  url: string;
  log: string;
  child: ChildProcess;
}

const running = new Set<ChildProcess>();
// Should the test process die before its `after` runs, no pod outlives it.
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

export function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** SIGTERM, then SIGKILL if the pod has not stopped within `graceMs`. */
export async function stop(child: ChildProcess, graceMs = 5_000): Promise<void> {
  if (!exited(child)) {
    const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    await gone;
    clearTimeout(timer);
  }
  running.delete(child);
}

export function tail(file: string): string {
  try {
    return readFileSync(file, "utf8").split("\n").slice(-15).join("\n");
  } catch {
    return "(no log)";
  }
}

/** Polls `check` until it returns true, `attempts` times at most, 100 ms apart. */
export async function until(what: string, attempts: number, check: () => Promise<boolean>, pods: Pod[]): Promise<void> {
  let last: unknown;
  for (let i = 0; i < attempts; i++) {
    for (const pod of pods) {
      if (exited(pod.child)) {
        throw new Error(`pod ${pod.ordinal} exited (${pod.child.exitCode ?? pod.child.signalCode}):\n${tail(pod.log)}`);
      }
    }
    try {
      if (await check()) return;
    } catch (e) {
      last = e;
    }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
}

export interface Deployment {
  dir: string;
  /** The first pod's port; pod k listens on base + k, and `spare` more ports follow, free. */
  base: number;
  template: string;
  token: string;
  pods: Pod[];
  /** Client options for this deployment. */
  options(extra?: Partial<GatewayClientOptions>): GatewayClientOptions;
  /** Stops the pods (SIGTERM, then SIGKILL) and removes the directory. */
  stop(): Promise<void>;
}

export interface DeploymentOptions {
  pods: number;
  /** Free ports to keep after the pods' (for relays). */
  spare?: number;
  /** More environment for the pods. */
  env?: Record<string, string>;
  /** Directory name prefix under the system's temporary directory. */
  prefix?: string;
}

/**
 * Starts `pods` pods replaying the sample stream and waits until every guild's owner has
 * committed all of its message_stats rows.
 */
export async function startDeployment(settings: DeploymentOptions): Promise<Deployment> {
  assert.ok(existsSync(BIN), `the pod binary ${BIN} is missing: build it, or set GUILD_GATEWAY_BIN`);
  assert.ok(existsSync(EVENTS), `${EVENTS} is missing`);
  const token = randomBytes(16).toString("hex");
  const dir = mkdtempSync(path.join(os.tmpdir(), settings.prefix ?? "gg-client-test-"));
  const base = await freePorts(settings.pods + (settings.spare ?? 0));
  const template = `http://127.0.0.1:{ordinal+${base}}`;
  const pods: Pod[] = [];
  const deployment: Deployment = {
    dir,
    base,
    template,
    token,
    pods,
    options: (extra = {}) => ({ pods: settings.pods, podUrlTemplate: template, token, timeoutMs: 10_000, ...extra }),
    stop: async () => {
      await Promise.all(pods.map((pod) => stop(pod.child)));
      pods.length = 0;
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    for (let ordinal = 0; ordinal < settings.pods; ordinal++) {
      const log = path.join(dir, `pod${ordinal}.log`);
      const fd = openSync(log, "w");
      const child = spawn(BIN, ["replay", "--linger", EVENTS], {
        cwd: dir,
        env: {
          PATH: process.env["PATH"] ?? "/usr/bin:/bin",
          API_TOKEN: token,
          POD_URL_TEMPLATE: template,
          NUM_GATEWAY_PODS: String(settings.pods),
          POD_ORDINAL: String(ordinal),
          HTTP_ADDR: `127.0.0.1:${base + ordinal}`,
          DATABASE_URL: path.join(dir, `pod${ordinal}.db`),
          LOG_FORMAT: "json",
          ...settings.env,
        },
        stdio: ["ignore", fd, fd],
      });
      closeSync(fd);
      running.add(child);
      pods.push({ ordinal, url: `http://127.0.0.1:${base + ordinal}`, log, child });
    }
    for (const pod of pods) {
      await until(`pod ${pod.ordinal}'s /status`, 300, async () => (await fetch(`${pod.url}/status`)).ok, pods);
    }
    // Each owner has committed all of its guild's rows once its count matches the fixture.
    const client = new GatewayClient(deployment.options());
    for (const guild of expected.guilds) {
      await until(
        `guild ${guild}'s ${countOf(guild)} message_stats rows`,
        300,
        async () => toObjects(await client.query(guild, countStatement(guild)))[0]?.["n"] === countOf(guild),
        pods,
      );
    }
  } catch (e) {
    await deployment.stop();
    throw e;
  }
  return deployment;
}
