// A relay client whose connection dies: within RELAY_RESUME_WINDOW it resumes and gets exactly
// what it missed; past the window it is told to identify again (op 9) and rebuilds its cache
// from a fresh READY and GUILD_CREATEs. discord.js 14 does both on its own.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import { Client, Events, GatewayIntentBits } from "discord.js";
import { relayRest } from "../relay.mjs";
import { Deployment, TOKEN, readStream, waitFor } from "./deployment.mjs";

/** What identifies a dispatch across its re-serialization by the pod. */
function key(t, d) {
  const user = d.user?.id ?? d.user_id ?? d.member?.user?.id ?? d.author?.id ?? "";
  return [t, d.id ?? "", d.message_id ?? "", user, d.target_id ?? "", d.action_type ?? "", d.emoji?.name ?? ""].join("|");
}

const guildOf = (t, d) => (t === "GUILD_CREATE" ? d.id : d.guild_id) ?? "dm";

function byGuild(frames) {
  const out = new Map();
  for (const { t, d } of frames) {
    if (t === "READY" || t === "RESUMED") continue;
    const g = guildOf(t, d);
    if (!out.has(g)) out.set(g, []);
    out.get(g).push(key(t, d));
  }
  return out;
}

/** Kills the client's gateway socket without a close frame, as a network failure does. */
function killSocket(client) {
  client.ws._ws.strategy.shards.get(0).connection.terminate();
}

async function metric(pod, series) {
  const page = await (await fetch(`${pod.url}/metrics`)).text();
  const line = page.split("\n").find((l) => l.startsWith(`${series} `));
  return line ? Number(line.split(" ")[1]) : 0;
}

let deployment;
before(async () => {
  deployment = await Deployment.start({
    pods: 1,
    guilds: 8,
    messages: 4000,
    liveRate: 500,
    env: { RELAY_RESUME_WINDOW: "2" },
  });
});
after(() => deployment?.stop());

test("a client resumes within the window losing nothing, and past it identifies again", { timeout: 180_000 }, async () => {
  const [pod] = deployment.pods;
  const stream = readStream(deployment.stream);
  const expected = byGuild(stream);
  const client = new Client({
    intents: [GatewayIntentBits.Guilds, GatewayIntentBits.GuildMessages, GatewayIntentBits.GuildModeration],
    rest: { ...relayRest(pod.relay), api: `${deployment.fake.url}/api` },
  });
  const frames = [];
  client.on(Events.Raw, (p) => p.op === 0 && frames.push({ t: p.t, d: p.d }));
  let resumed = 0;
  client.on(Events.ShardResume, () => resumed++);
  const ready = once(client, Events.ClientReady);
  await client.login(TOKEN);
  await ready;
  try {
    await deployment.play();
    await waitFor("500 dispatches", 60_000, () => (frames.length >= 500 ? true : undefined));
    killSocket(client);
    await waitFor("the resume", 30_000, () => (resumed === 1 ? true : undefined));
    await waitFor("2000 dispatches", 60_000, () => (frames.length >= 2000 ? true : undefined));
    killSocket(client);
    // The client cannot reconnect for 4 s: past the 2 s window.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 4000);
    await waitFor("a second READY", 30_000, () =>
      frames.filter((f) => f.t === "READY").length === 2 ? true : undefined,
    );
    await deployment.played(120_000);
    const lastKey = (list) => list[list.length - 1];
    await waitFor("the last event of every guild", 30_000, () => {
      const got = byGuild(frames);
      return [...expected].every(([g, list]) => lastKey(got.get(g) ?? []) === lastKey(list)) ? true : undefined;
    });

    assert.equal(await metric(pod, 'guild_gateway_relay_resumes_total{outcome="ok"}'), 1);
    assert.equal(await metric(pod, 'guild_gateway_relay_resumes_total{outcome="failed"}'), 1);
    const second = frames.findIndex((f, i) => f.t === "READY" && i > 0);
    const [before, after] = [frames.slice(1, second), frames.slice(second + 1)];
    // Up to the second session: every guild's events once, in order, across the resume.
    for (const [g, list] of byGuild(before)) {
      assert.deepEqual(list, expected.get(g).slice(0, list.length), `guild ${g}: nothing lost or doubled across the resume`);
    }
    // The new session: READY lists every guild, a GUILD_CREATE each, then the stream goes on.
    const readyGuilds = frames[second].d.guilds.map((g) => g.id).sort();
    const guilds = stream.filter((f) => f.t === "GUILD_CREATE").map((f) => f.d.id).sort();
    assert.deepEqual(readyGuilds, guilds);
    const creates = after.slice(0, guilds.length);
    assert.deepEqual(creates.map((f) => f.t), guilds.map(() => "GUILD_CREATE"));
    for (const [g, list] of byGuild(after.slice(guilds.length))) {
      const all = expected.get(g);
      assert.deepEqual(list, all.slice(all.length - list.length), `guild ${g}: the new session's events are the stream's tail`);
    }
    // The cache, rebuilt from the snapshot: every guild available with its channels and roles.
    for (const { d } of stream.filter((f) => f.t === "GUILD_CREATE")) {
      const guild = client.guilds.cache.get(d.id);
      assert.ok(guild?.available, `guild ${d.id} available again`);
      assert.deepEqual([...guild.channels.cache.keys()].sort(), [...d.channels, ...d.threads].map((c) => c.id).sort());
      assert.deepEqual([...guild.roles.cache.keys()].sort(), d.roles.map((r) => r.id).sort());
    }
  } finally {
    await client.destroy();
  }
});
