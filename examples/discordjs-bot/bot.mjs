// A minimal discord.js 14 moderation bot (in the spirit of reactiflux/mod-bot) on guild-gateway
// pods' relays. It reads `guild-gateway-dev simulate --json` on stdin:
//
//   target/debug/guild-gateway-dev simulate --relay-clients 1 --live-rate 1000 --json | node examples/discordjs-bot/bot.mjs
//
// With `--live-rate N` simulate holds the stream until every pod's relay has its client
// (`--relay-clients 1`), so the bot sees every event; without it the pods take events as soon
// as they connect, and the bot counts only what is relayed after it joined.
//
// Why one Client per pod: each pod serves its own share of the guilds on its relay, and a bot
// sees all its guilds only by connecting to every pod. The handlers are ordinary discord.js
// code; the only relay-specific part is `relayRest` (the pod answers `GET /gateway/bot`, the
// rest of the REST API is Discord's, here the fake one simulate runs).
//
// Why the bot listens for `stopping`: discord.js 14 reconnects forever to a gateway that went
// away, so a client whose pod is about to stop must leave by itself. It waits for its guilds to
// leave it (a rescale moved them to other pods: GUILD_DELETE with `unavailable`) or a short
// grace for the last relayed events, then destroys the client, which lets simulate go on.
//
// Why it only logs and counts: the fake Discord's REST API serves no `POST /channels/:id/messages`,
// so where mod-bot would post a welcome or answer a command, this bot writes a line. It never
// logs message content (and does not ask for the MessageContent intent).
//
// The summary at the end (stdin closed, i.e. simulate exited, or SIGINT) is a line per pod and
// one `summary {...}` JSON line for scripts and tests.

import readline from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { Client, Events, GatewayIntentBits } from "discord.js";
import { relayRest } from "./relay.mjs";

const intents = [GatewayIntentBits.Guilds, GatewayIntentBits.GuildMessages, GatewayIntentBits.GuildModeration];
/** How long a stopping pod's client waits for its last events when its guilds stay. */
const GRACE_MS = 2_000;
/** A pod's line comes as it starts; its relay answers a moment later. */
const RELAY_WAIT_MS = 60_000;

/** The fake Discord's REST base and the bot's token, from simulate's `discord` line. */
let discord;
/** One per pod line, in order (a pod started again by a rescale gets a new one). */
const bots = [];
let shuttingDown = false;

const log = (bot, text) => console.log(`pod ${bot.ordinal}: ${text}`);
const increment = (map, key) => map.set(key, (map.get(key) ?? 0) + 1);

function startBot(pod) {
  const client = new Client({ intents, rest: { ...relayRest(pod.relay), api: discord.api } });
  const bot = {
    ordinal: pod.ordinal,
    client,
    stopping: false,
    /** Guilds this pod served the bot (ids): a guild moved here by a rescale counts too. */
    guilds: new Set(),
    /** Messages per guild id. */
    messages: new Map(),
    /** Commands per name. */
    interactions: new Map(),
    bans: 0,
  };
  bots.push(bot);

  client.once(Events.ClientReady, (c) => {
    for (const guild of c.guilds.cache.values()) if (guild.available) bot.guilds.add(guild.id);
    // The username, not `tag`: the relay's READY has no discriminator, which `tag` shows as "#null".
    log(bot, `ready as ${c.user.username} in ${c.guilds.cache.size} guilds`);
  });
  client.on(Events.GuildCreate, (guild) => {
    bot.guilds.add(guild.id);
    log(bot, `joined ${guild.name}`);
  });
  // A guild that left this client (a rescale) and came back.
  client.on(Events.GuildAvailable, (guild) => bot.guilds.add(guild.id));
  client.on(Events.MessageCreate, (message) => {
    if (message.inGuild()) increment(bot.messages, message.guildId);
  });
  client.on(Events.InteractionCreate, (interaction) => {
    if (interaction.isCommand()) increment(bot.interactions, interaction.commandName);
  });
  client.on(Events.GuildBanAdd, (ban) => {
    bot.bans += 1;
    log(bot, `user ${ban.user.id} banned from ${ban.guild.name}`);
  });
  client.on(Events.Error, (error) => log(bot, `client error: ${error.message}`));

  bot.started = connect(bot, pod).catch((error) => log(bot, `could not connect: ${error.message}`));
}

/** Logs in once the pod's relay answers; a pod that stops first is never joined. */
async function connect(bot, pod) {
  const gatewayBot = `${pod.relay.replace(/^ws/, "http")}/api/v10/gateway/bot`;
  const deadline = Date.now() + RELAY_WAIT_MS;
  for (;;) {
    if (bot.stopping || shuttingDown) return;
    const ok = await fetch(gatewayBot, { headers: { authorization: `Bot ${discord.token}` } }).then(
      (response) => response.ok,
      () => false,
    );
    if (ok) break;
    if (Date.now() > deadline) throw new Error(`the relay at ${pod.relay} did not answer in ${RELAY_WAIT_MS / 1000} s`);
    await sleep(100);
  }
  await bot.client.login(discord.token);
  // Stopped while logging in: leave now rather than reconnect to a pod that is gone.
  if (bot.stopping || shuttingDown) await bot.client.destroy();
}

/** The pod stops: leave once its guilds left this client, or after the grace. */
async function leave(bot) {
  bot.stopping = true;
  await bot.started;
  const gone = () => bot.client.guilds.cache.every((guild) => !guild.available);
  const deadline = Date.now() + GRACE_MS;
  while (!shuttingDown && !gone() && Date.now() < deadline) await sleep(100);
  await bot.client.destroy();
  log(bot, "left (the pod is stopping)");
}

function summary(bot) {
  const sum = (map) => [...map.values()].reduce((a, b) => a + b, 0);
  return {
    ordinal: bot.ordinal,
    guilds: bot.guilds.size,
    messages: sum(bot.messages),
    messagesPerGuild: Object.fromEntries(bot.messages),
    interactions: Object.fromEntries(bot.interactions),
    bans: bot.bans,
  };
}

async function shutdown() {
  if (shuttingDown) return;
  shuttingDown = true;
  lines.close();
  process.stdin.destroy();
  await Promise.all(bots.map((bot) => bot.client.destroy()));
  const pods = bots.map(summary);
  for (const pod of pods) {
    const commands = Object.entries(pod.interactions).map(([name, n]) => `${name} ${n}`).join(", ");
    console.log(
      `pod ${pod.ordinal}: ${pod.guilds} guilds, ${pod.messages} messages, ` +
        `${Object.values(pod.interactions).reduce((a, b) => a + b, 0)} commands${commands ? ` (${commands})` : ""}, ${pod.bans} bans`,
    );
  }
  console.log(`summary ${JSON.stringify({ pods })}`);
  process.exitCode = 0;
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  let message;
  try {
    message = JSON.parse(line);
  } catch {
    return; // not one of simulate's JSON lines
  }
  if (shuttingDown || message === null || typeof message !== "object") return;
  if (message.discord) discord = message.discord;
  if (message.pod?.relay) {
    if (discord) startBot(message.pod);
    else console.error(`pod ${message.pod.ordinal}: no discord line before it, skipped`);
  }
  if (message.stopping) {
    const bot = bots.findLast((b) => b.ordinal === message.stopping.ordinal && !b.stopping);
    if (bot) leave(bot).catch((error) => log(bot, `leaving: ${error.message}`));
  }
});
lines.on("close", shutdown);
// Once: a second Ctrl-C ends the process at once.
process.once("SIGINT", shutdown);
