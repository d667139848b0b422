// discord.js 14, as the bot runs it (an unmodified Client with the relay's REST setting),
// against the relays of 3 pods in front of a fake Discord playing a synthetic stream: bans,
// timeouts and kicks with early, late and missing audit entries, slash commands, DMs.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { once } from "node:events";
import { Client, Events, GatewayIntentBits } from "discord.js";
import { relayRest } from "../relay.mjs";
import { Deployment, TOKEN, owners, readStream, waitFor } from "./deployment.mjs";

const PODS = 3;
const intents = [
  GatewayIntentBits.Guilds,
  GatewayIntentBits.GuildMembers,
  GatewayIntentBits.GuildModeration,
  GatewayIntentBits.GuildMessages,
  GatewayIntentBits.MessageContent,
  GatewayIntentBits.GuildMessageReactions,
  GatewayIntentBits.DirectMessages,
];

/** What identifies a dispatch across its re-serialization by the pod. */
function key(t, d) {
  const user = d.user?.id ?? d.user_id ?? d.member?.user?.id ?? d.author?.id ?? "";
  return [t, d.id ?? "", d.message_id ?? "", user, d.target_id ?? "", d.action_type ?? "", d.emoji?.name ?? ""].join("|");
}

/** A discord.js client on `pod`'s relay, recording every dispatch it is sent; `ready` resolves
 * with its ClientReady. */
async function connect(deployment, pod) {
  const client = new Client({
    intents,
    rest: { ...relayRest(pod.relay), api: `${deployment.fake.url}/api` },
  });
  const seen = { frames: [], events: { messageCreate: 0, interactionCreate: 0, guildBanAdd: 0, guildCreate: 0 } };
  client.on(Events.Raw, (packet) => {
    if (packet.op === 0) seen.frames.push({ t: packet.t, d: packet.d });
  });
  for (const name of Object.keys(seen.events)) client.on(name, () => seen.events[name]++);
  const ready = once(client, Events.ClientReady);
  await client.login(TOKEN);
  return { client, seen, pod, ready };
}

/** The dispatches a client sent by `pod` must see, per guild ("dm" for DMs), in order. */
function expectedOf(stream, owner, pod) {
  const byGuild = new Map();
  for (const { t, d, guild } of stream) {
    const mine = guild === null ? pod === 0 : owner.get(guild) === pod;
    if (!mine) continue;
    const g = guild ?? "dm";
    if (!byGuild.has(g)) byGuild.set(g, []);
    byGuild.get(g).push(key(t, d));
  }
  return byGuild;
}

function receivedOf(frames) {
  const byGuild = new Map();
  for (const { t, d } of frames) {
    if (t === "READY" || t === "RESUMED") continue;
    const g = (t === "GUILD_CREATE" || t === "GUILD_DELETE" ? d.id : d.guild_id) ?? "dm";
    if (!byGuild.has(g)) byGuild.set(g, []);
    byGuild.get(g).push(key(t, d));
  }
  return byGuild;
}

const total = (byGuild) => [...byGuild.values()].reduce((n, list) => n + list.length, 0);

let deployment;
let stream;
let owner;

before(async () => {
  deployment = await Deployment.start({ pods: PODS, guilds: 12, messages: 1500, liveRate: 400 });
  stream = readStream(deployment.stream);
  const guilds = [...new Set(stream.map((f) => f.guild).filter(Boolean))];
  owner = owners(guilds, PODS);
});

after(() => deployment?.stop());

test("each pod's discord.js client gets exactly its guilds' events, once and in order", { timeout: 180_000 }, async () => {
  // Connected before the stream starts, as a bot started with its pods: READY lists the pod's
  // guilds (unavailable) and discord.js is ready once their GUILD_CREATEs came.
  const clients = await Promise.all(deployment.pods.map((pod) => connect(deployment, pod)));
  try {
    await deployment.play();
    await Promise.all(clients.map((c) => c.ready));
    await deployment.played(120_000);
    for (const { seen, pod } of clients) {
      const expected = expectedOf(stream, owner, pod.ordinal);
      await waitFor(`pod ${pod.ordinal}'s client to receive ${total(expected)} dispatches`, 30_000, () =>
        total(receivedOf(seen.frames)) >= total(expected) ? true : undefined,
      );
      // A moment for anything wrongly doubled to show.
      await new Promise((resolve) => setTimeout(resolve, 300));
      const received = receivedOf(seen.frames);
      assert.deepEqual([...received.keys()].sort(), [...expected.keys()].sort(), `pod ${pod.ordinal}: the guilds relayed`);
      for (const [guild, list] of expected) {
        assert.deepEqual(received.get(guild), list, `pod ${pod.ordinal}, guild ${guild}: every event once, in Discord's order`);
      }
      // discord.js drops DMs in channels it has not cached (without the Channel partial): the
      // typed events are counted over guilds, the frames above cover DMs too.
      const count = (t) =>
        [...expected].filter(([g]) => g !== "dm").flatMap(([, list]) => list).filter((k) => k.startsWith(`${t}|`)).length;
      assert.ok(count("INTERACTION_CREATE") > 0 && count("GUILD_BAN_ADD") > 0, "the stream has commands and bans");
      assert.equal(seen.events.messageCreate, count("MESSAGE_CREATE"), `pod ${pod.ordinal}: messageCreate`);
      assert.equal(seen.events.interactionCreate, count("INTERACTION_CREATE"), `pod ${pod.ordinal}: interactionCreate`);
      assert.equal(seen.events.guildBanAdd, count("GUILD_BAN_ADD"), `pod ${pod.ordinal}: guildBanAdd`);
      // Every guild came as one READY announced, none as a join (the bot welcomes joins).
      assert.equal(seen.events.guildCreate, 0, `pod ${pod.ordinal}: guildCreate`);
    }
    // The cache: exactly the pod's guilds, with the recording's channels, threads and roles.
    for (const { client, pod } of clients) {
      const creates = stream.filter((f) => f.t === "GUILD_CREATE" && owner.get(f.guild) === pod.ordinal);
      assert.deepEqual([...client.guilds.cache.keys()].sort(), creates.map((f) => f.guild).sort());
      for (const { d } of creates) {
        const guild = client.guilds.cache.get(d.id);
        assert.ok(guild.available, `guild ${d.id} available`);
        const channels = [...d.channels, ...d.threads].map((c) => c.id).sort();
        assert.deepEqual([...guild.channels.cache.keys()].sort(), channels, `guild ${d.id}: channels and threads`);
        assert.deepEqual([...guild.roles.cache.keys()].sort(), d.roles.map((r) => r.id).sort(), `guild ${d.id}: roles`);
      }
    }
    // op 8: the members of a guild, through the pod's Discord session and back by nonce.
    const { client, pod } = clients.find((c) => c.client.guilds.cache.size > 0);
    const guild = client.guilds.cache.first();
    const members = await guild.members.fetch({ time: 10_000 });
    const recorded = stream.find((f) => f.t === "GUILD_CREATE" && f.guild === guild.id).d.members;
    assert.deepEqual([...members.keys()].sort(), recorded.map((m) => m.user.id).sort(), `pod ${pod.ordinal}: members.fetch()`);
  } finally {
    for (const { client } of clients) await client.destroy();
  }
});
