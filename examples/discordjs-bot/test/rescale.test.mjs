// Under `simulate --pods 3 --rescale 5,2` (3 pods, then 5, then 2) with live traffic (bans,
// timeouts and kicks with early, late and missing audit entries, slash commands, DMs) and the
// other core busy, one discord.js client per pod, started with the pods: every event of the
// stream reaches exactly one client, in order, while its guild is owned by that client's pod;
// no client meets a guild before its pod's data API serves the guild's row.

import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { Client, Events, GatewayIntentBits } from "discord.js";
import { relayRest } from "../relay.mjs";
import { DEV_BIN, BIN, owners, synthetic, waitFor } from "./deployment.mjs";

const API_TOKEN = "simulate-data-api-token";

function key(t, d) {
  const user = d.user?.id ?? d.user_id ?? d.member?.user?.id ?? d.author?.id ?? "";
  return [t, d.id ?? "", d.message_id ?? "", user, d.target_id ?? "", d.action_type ?? "", d.emoji?.name ?? ""].join("|");
}

const guildOf = (t, d) => (t === "GUILD_CREATE" || t === "GUILD_DELETE" ? d.id : d.guild_id) ?? "dm";

/** Whether the pod at `http` holds the guild's `guilds` row now: `{ held }`, or its 421's epoch. */
async function holdsRow(http, guild) {
  const response = await fetch(`http://${http}/v1/guilds/${guild}/query`, {
    method: "POST",
    headers: { authorization: `Bearer ${API_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ sql: 'select count(*) as "n" from "guilds" where "id" = ?', params: [guild] }),
  });
  const body = await response.json();
  if (response.status === 421) return { held: false, movedAt: body.epoch };
  const first = body.rows?.[0];
  return { held: response.ok && Number(Array.isArray(first) ? first[0] : first?.n) === 1, status: response.status };
}

const STREAM = { guilds: 24, messages: 3000 };
/** The pod count of each epoch: 1, then the two rescales. */
const LAYOUTS = [3, 5, 2];

/** The stream simulate plays, as each guild's event keys in order. */
function expectedStream() {
  const stream = synthetic(STREAM, path.join(dir, "expected.ndjson"));
  const expected = new Map();
  for (const { t, d } of stream) {
    const g = guildOf(t, d);
    if (!expected.has(g)) expected.set(g, []);
    expected.get(g).push(key(t, d));
  }
  return expected;
}

function allLastEventsSeen(expected, clients) {
  const seen = new Set(clients.flatMap((c) => c.frames.map((f) => key(f.t, f.d))));
  return [...expected.values()].every((list) => seen.has(list[list.length - 1]));
}

/** The guilds a client holds after `frames`: met in a GUILD_CREATE, not yet left. */
function openGuilds(frames) {
  const open = new Set();
  for (const { t, d } of frames) {
    if (t === "GUILD_CREATE") open.add(d.id);
    if (t === "GUILD_DELETE") open.delete(d.id);
  }
  return open;
}

const dir = mkdtempSync(path.join(os.tmpdir(), "relay-rescale-"));
const clients = [];
let simulate;
let busy;
let stopping = false;
after(async () => {
  stopping = true;
  busy?.kill("SIGKILL");
  for (const { client } of clients) await client.destroy();
  if (simulate && simulate.exitCode === null) simulate.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

test("across a rescale 3 -> 5 -> 2 every event reaches exactly one client, in order", { timeout: 600_000 }, async () => {
  // The other core is busy, as on a shared node.
  busy = spawn(process.execPath, ["-e", "for (;;) {}"], { stdio: "ignore" });
  simulate = spawn(DEV_BIN, [
    "simulate", "--json", "--relay-clients", "1", "--pods", String(LAYOUTS[0]), "--rescale", LAYOUTS.slice(1).join(","),
    "--guilds", String(STREAM.guilds), "--messages", String(STREAM.messages), "--live-rate", "300", "--identify-window-ms", "200",
    "--data-dir", dir, "--timeout-secs", "400",
  ], { env: { ...process.env, GUILD_GATEWAY_BIN: BIN }, stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  simulate.stderr.on("data", (chunk) => (stderr += chunk));
  const exited = new Promise((resolve) => simulate.once("exit", (code) => resolve(code)));
  let discord;
  const rowChecks = [];
  const expected = expectedStream();
  // A client leaves when its pod is about to stop, once it has all its pod relays: every
  // guild left it, or the stream's last events have all arrived.
  const leave = async (ordinal) => {
    const seen = clients.find((c) => c.pod.ordinal === ordinal);
    if (!seen) return;
    await waitFor(`pod ${ordinal}'s last events at its client`, 20_000, () =>
      openGuilds(seen.frames).size === 0 || allLastEventsSeen(expected, clients) ? true : undefined,
    ).catch(() => {});
    await seen.client.destroy();
  };
  const lines = readline.createInterface({ input: simulate.stdout });
  lines.on("line", async (line) => {
    const message = JSON.parse(line);
    if (message.discord) discord = message.discord;
    if (message.stopping) await leave(message.stopping.ordinal);
    if (!message.pod?.relay) return;
    const pod = message.pod;
    const client = new Client({
      intents: [GatewayIntentBits.Guilds, GatewayIntentBits.GuildMessages, GatewayIntentBits.GuildModeration],
      rest: { ...relayRest(pod.relay), api: discord.api },
    });
    const seen = { client, pod, frames: [] };
    clients.push(seen);
    client.on(Events.Raw, (p) => {
      if (p.op !== 0) return;
      seen.frames.push({ t: p.t, d: p.d, at: process.hrtime.bigint() });
      if (p.t === "GUILD_CREATE") {
        rowChecks.push(holdsRow(pod.http, p.d.id).then((answer) => ({ ...answer, guild: p.d.id, seen })));
      }
    });
    // The pod's line comes as it starts: its relay answers a moment later.
    const gatewayBot = `${pod.relay.replace(/^ws/, "http")}/api/v10/gateway/bot`;
    await waitFor(`pod ${pod.ordinal}'s relay`, 60_000, () =>
      fetch(gatewayBot, { headers: { authorization: `Bot ${discord.token}` } }).then((r) => (r.ok ? true : undefined), () => undefined),
    );
    if (stopping) return;
    await client.login(discord.token);
    if (stopping) await client.destroy();
  });
  const code = await exited;
  assert.equal(code, 0, `simulate failed:\n${stderr.slice(-3000)}`);

  assert.ok(allLastEventsSeen(expected, clients), "every guild's last event reached a client");

  // Each client's frames of a guild, cut into tenures: from a GUILD_CREATE to a GUILD_DELETE.
  const tenures = new Map();
  for (const { frames, pod } of clients) {
    const open = new Map();
    for (const { t, d, at } of frames) {
      if (t === "READY" || t === "RESUMED") continue;
      const g = guildOf(t, d);
      if (t === "GUILD_DELETE") {
        open.delete(g);
        continue;
      }
      if (t === "GUILD_CREATE" || !open.has(g)) {
        const tenure = { pod: pod.ordinal, at, keys: [], announced: t === "GUILD_CREATE" };
        open.set(g, tenure);
        if (!tenures.has(g)) tenures.set(g, []);
        tenures.get(g).push(tenure);
      }
      open.get(g).keys.push(key(t, d));
    }
  }
  assert.deepEqual([...tenures.keys()].sort(), [...expected.keys()].sort(), "every guild reached a client");
  let moved = 0;
  for (const [g, list] of expected) {
    const parts = tenures.get(g).sort((a, b) => (a.at < b.at ? -1 : 1));
    moved += parts.length - 1;
    // A tenure after the first opens with the new owner's GUILD_CREATE, not an event of the stream.
    const got = parts.flatMap((part, i) => (i > 0 && part.announced ? part.keys.slice(1) : part.keys));
    assert.deepEqual(got, list, `guild ${g}: every event exactly once, in order, across pods ${parts.map((p) => p.pod)}`);
  }
  assert.ok(moved > 0, "guilds moved between clients");
  // A 421 names the epoch the pod serves. It is a failure unless the guild had already moved
  // on: then this pod owned it in the epoch before (a pod answers 421 for a guild it is only
  // taking until the commit).
  const layouts = LAYOUTS.map((pods) => owners([...expected.keys()].filter((g) => g !== "dm"), pods));
  const checks = await Promise.all(rowChecks);
  let conclusive = 0;
  for (const { held, movedAt, status, guild, seen } of checks) {
    const ordinal = seen.pod.ordinal;
    if (held) conclusive += 1;
    else assert.ok(
      movedAt >= 2 && layouts[movedAt - 2]?.get(guild) === ordinal,
      `pod ${ordinal} announced guild ${guild} before its API served the guild's row (${movedAt ? `421 at epoch ${movedAt}` : status})`,
    );
  }
  assert.ok(conclusive > checks.length / 2, `${conclusive} of ${checks.length} row checks conclusive`);
});
