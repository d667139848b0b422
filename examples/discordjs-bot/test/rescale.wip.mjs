// NOT YET PASSING, not run by `npm test` (issue 20 open): the exactly-once check passes; the
// row check fails, possibly because it queries after the guild moved on (421). Run it with
// `node --test test/rescale.wip.mjs`.
// Under `simulate --pods 3 --rescale 5,2` (3 pods, then 5, then 2) with live traffic (bans, timeouts, kicks with early, late
// and missing audit entries, slash commands, DMs), one discord.js client per pod, started
// with the pods: every event of the stream reaches exactly one client, in order, while its
// guild is owned by that client's pod; no client meets a guild before its pod holds the
// guild's row.

import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { Client, Events, GatewayIntentBits } from "discord.js";
import { relayRest } from "../relay.mjs";
import { DEV_BIN, BIN, readStream, waitFor } from "./deployment.mjs";

const API_TOKEN = "simulate-data-api-token";

function key(t, d) {
  const user = d.user?.id ?? d.user_id ?? d.member?.user?.id ?? d.author?.id ?? "";
  return [t, d.id ?? "", d.message_id ?? "", user, d.target_id ?? "", d.action_type ?? "", d.emoji?.name ?? ""].join("|");
}

const guildOf = (t, d) => (t === "GUILD_CREATE" || t === "GUILD_DELETE" ? d.id : d.guild_id) ?? "dm";

/** Whether the pod at `http` holds the guild's `guilds` row now. */
async function holdsRow(http, guild) {
  const response = await fetch(`http://${http}/v1/guilds/${guild}/query`, {
    method: "POST",
    headers: { authorization: `Bearer ${API_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ sql: 'select count(*) as "n" from "guilds" where "id" = ?', params: [guild] }),
  });
  if (!response.ok) return false;
  const { rows } = await response.json();
  const first = rows?.[0];
  return Number(Array.isArray(first) ? first[0] : first?.n) === 1;
}

const dir = mkdtempSync(path.join(os.tmpdir(), "relay-rescale-"));
const clients = [];
let simulate;
let stopping = false;
after(async () => {
  stopping = true;
  for (const { client } of clients) await client.destroy();
  if (simulate && simulate.exitCode === null) simulate.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

test("across a rescale 3 -> 5 -> 2 every event reaches exactly one client, in order", { timeout: 600_000 }, async () => {
  simulate = spawn(DEV_BIN, [
    "simulate", "--json", "--relay-clients", "1", "--pods", "3", "--rescale", "5,2",
    "--guilds", "24", "--messages", "3000", "--live-rate", "300", "--identify-window-ms", "200",
    "--data-dir", dir, "--timeout-secs", "400",
  ], { env: { ...process.env, GUILD_GATEWAY_BIN: BIN }, stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  simulate.stderr.on("data", (chunk) => (stderr += chunk));
  const exited = new Promise((resolve) => simulate.once("exit", (code) => resolve(code)));
  let discord;
  const rowChecks = [];
  const lines = readline.createInterface({ input: simulate.stdout });
  lines.on("line", async (line) => {
    const message = JSON.parse(line);
    if (message.discord) discord = message.discord;
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
      if (p.t === "GUILD_CREATE") rowChecks.push(holdsRow(pod.http, p.d.id).then((held) => ({ held, guild: p.d.id, pod: pod.ordinal })));
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

  const stream = readStream(path.join(dir, "synthetic-24g-3000m.ndjson"));
  const expected = new Map();
  for (const { t, d } of stream) {
    const g = guildOf(t, d);
    if (!expected.has(g)) expected.set(g, []);
    expected.get(g).push(key(t, d));
  }
  const lastOf = (list) => list[list.length - 1];
  await waitFor("every guild's last event at some client", 30_000, () => {
    const last = new Set(clients.flatMap((c) => c.frames.map((f) => key(f.t, f.d))));
    return [...expected.values()].every((list) => last.has(lastOf(list))) ? true : undefined;
  });
  await new Promise((resolve) => setTimeout(resolve, 500));

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
  const checks = await Promise.all(rowChecks);
  assert.ok(checks.length > 0);
  for (const check of checks) assert.ok(check.held, `pod ${check.pod} announced guild ${check.guild} before holding its row`);
});
