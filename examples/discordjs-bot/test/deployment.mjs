// A local deployment for the relay's tests: a fake Discord playing a synthetic stream on a
// held live clock, and `guild-gateway serve` pods with their relays, all on 127.0.0.1. Only
// the processes started here are ever stopped, by their own handles.

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, openSync, closeSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const BIN = process.env.GUILD_GATEWAY_BIN ?? path.join(root, "target/debug/guild-gateway");
export const DEV_BIN = process.env.GUILD_GATEWAY_DEV_BIN ?? path.join(root, "target/debug/guild-gateway-dev");
export const TOKEN = "relay-test-token";

/** A free port on 127.0.0.1 (the OS picks it; it is released before use). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Polls `check` until it returns something other than undefined, at most `ms`. */
export async function waitFor(what, ms, check) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(100);
  }
}

async function json(url, init) {
  try {
    const response = await fetch(url, init);
    return response.ok ? await response.json() : undefined;
  } catch {
    return undefined;
  }
}

/** Each dispatch of an NDJSON stream: `{t, d, guild}`, guild null for DMs. */
export function readStream(file) {
  return readFileSync(file, "utf8")
    .split("\n")
    .filter((line) => line.trim())
    .map((line) => {
      const { t, d } = JSON.parse(line);
      const guild = t === "GUILD_CREATE" ? d.id : (d.guild_id ?? null);
      return { t, d, guild };
    });
}

/** The synthetic stream of `guilds` and `messages` (the same simulate plays), written to `file`. */
export function synthetic({ guilds, messages }, file) {
  execFileSync(DEV_BIN, ["synthetic", "--guilds", String(guilds), "--messages", String(messages), "--out", file]);
  return readStream(file);
}

/** Guild id -> owning pod, from the pod binary itself. */
export function owners(guilds, pods) {
  const out = execFileSync(BIN, ["shard-of", "--pods", String(pods), ...guilds], { encoding: "utf8" });
  return new Map(out.trim().split("\n").map((line) => {
    const [guild, ordinal] = line.split(" ");
    return [guild, Number(ordinal)];
  }));
}

export class Deployment {
  constructor(dir, stream, fake, pods) {
    this.dir = dir;
    this.stream = stream;
    this.fake = fake;
    this.pods = pods;
  }

  /** A stream of `guilds` and `messages`, the fake on a held clock, `pods` pods with relays. */
  static async start({ pods, guilds, messages, liveRate, env = {} }) {
    const dir = mkdtempSync(path.join(os.tmpdir(), "relay-test-"));
    const stream = path.join(dir, "events.ndjson");
    synthetic({ guilds, messages }, stream);
    const fakePort = await freePort();
    const fake = start(dir, "fake", DEV_BIN, [
      "fake-discord", "--listen", `127.0.0.1:${fakePort}`, "--events", stream, "--token", TOKEN,
      "--live-rate", String(liveRate), "--live-hold", "--identify-window-ms", "200",
    ], {});
    fake.url = `http://127.0.0.1:${fakePort}`;
    const deployment = new Deployment(dir, stream, fake, []);
    try {
      await waitFor("the fake Discord", 20_000, () => json(`${fake.url}/fake/clock`));
      for (let ordinal = 0; ordinal < pods; ordinal++) {
        const [http, relay] = [await freePort(), await freePort()];
        const pod = start(dir, `pod-${ordinal}`, BIN, ["serve"], {
          POD_ORDINAL: String(ordinal),
          NUM_GATEWAY_PODS: String(pods),
          DATABASE_URL: path.join(dir, `pod-${ordinal}.db`),
          HTTP_ADDR: `127.0.0.1:${http}`,
          RELAY_ADDR: `127.0.0.1:${relay}`,
          DISCORD_TOKEN: TOKEN,
          DISCORD_API_URL: fake.url,
          IDENTIFY_SLOT_MS: "200",
          RUST_LOG: "warn",
          ...env,
        });
        pod.ordinal = ordinal;
        pod.url = `http://127.0.0.1:${http}`;
        pod.relay = `ws://127.0.0.1:${relay}`;
        deployment.pods.push(pod);
      }
      for (const pod of deployment.pods) {
        await waitFor(`pod ${pod.ordinal} ready`, 60_000, async () => {
          const response = await fetch(`${pod.url}/readyz`).catch(() => undefined);
          return response?.ok ? true : undefined;
        });
      }
    } catch (error) {
      deployment.stop();
      throw error;
    }
    return deployment;
  }

  /** Starts the stream. */
  async play() {
    const response = await fetch(`${this.fake.url}/fake/clock/start`, { method: "POST" });
    if (!response.ok) throw new Error(`starting the fake's clock: ${response.status}`);
  }

  /** Resolves once the fake has sent the whole stream and every pod committed what it took. */
  async played(ms) {
    await waitFor("the stream's end", ms, async () => {
      const clock = await json(`${this.fake.url}/fake/clock`);
      return clock && clock.position === clock.total ? true : undefined;
    });
    for (const pod of this.pods) {
      await waitFor(`pod ${pod.ordinal} to commit`, ms, async () => {
        const status = await json(`${pod.url}/status`);
        return status && status.in_flight === 0 ? true : undefined;
      });
    }
  }

  /** Stops every process started here (by its own handle) and removes the files. */
  stop() {
    for (const child of [...this.pods, this.fake]) {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    }
    if (!process.env.KEEP_RELAY_TEST_FILES) rmSync(this.dir, { recursive: true, force: true });
  }

  log(name) {
    return readFileSync(path.join(this.dir, `${name}.log`), "utf8");
  }
}

function start(dir, name, bin, args, env) {
  const log = openSync(path.join(dir, `${name}.log`), "w");
  const child = spawn(bin, args, { env: { ...process.env, ...env }, stdio: ["ignore", log, log] });
  closeSync(log);
  return child;
}
