// The example bot as the README runs it, `simulate --relay-clients 1 --json | node bot.mjs`,
// on a small live stream: it ends by itself once simulate does, and its summary accounts for
// every guild and every guild message of the stream, each on the pod that owns it. The stream
// is known in advance: simulate plays the same synthetic stream as `guild-gateway-dev
// synthetic` for the same --guilds and --messages (checked against the copy it writes).

import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { BIN, DEV_BIN, owners, synthetic } from "./deployment.mjs";

const BOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../bot.mjs");
const STREAM = { guilds: 12, messages: 1500 };
const PODS = 2;

const dir = mkdtempSync(path.join(os.tmpdir(), "discordjs-bot-"));
const children = [];
after(() => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

/** Starts `bin`, keeping its stderr (and stdout unless piped elsewhere); resolves its exit. */
function run(bin, args, options) {
  const child = spawn(bin, args, options);
  children.push(child);
  const out = { stdout: "", stderr: "" };
  child.stderr.on("data", (chunk) => (out.stderr += chunk));
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal, ...out })));
  return { child, out, exited };
}

test("the bot on `simulate --json` ends by itself and counts every guild and guild message", { timeout: 300_000 }, async () => {
  const stream = synthetic(STREAM, path.join(dir, "expected.ndjson"));
  const dataDir = path.join(dir, "simulate");

  const simulate = run(DEV_BIN, [
    "simulate", "--json", "--relay-clients", "1", "--pods", String(PODS),
    "--guilds", String(STREAM.guilds), "--messages", String(STREAM.messages),
    "--live-rate", "500", "--identify-window-ms", "200", "--data-dir", dataDir, "--timeout-secs", "240",
  ], { env: { ...process.env, GUILD_GATEWAY_BIN: BIN }, stdio: ["ignore", "pipe", "pipe"] });
  const bot = run(process.execPath, [BOT], { stdio: ["pipe", "pipe", "pipe"] });
  bot.child.stdout.on("data", (chunk) => (bot.out.stdout += chunk));
  // The pipe of the shell pipeline: simulate's exit closes the bot's stdin.
  simulate.child.stdout.pipe(bot.child.stdin);

  const [sim, ended] = await Promise.all([simulate.exited, bot.exited]);
  assert.equal(sim.code, 0, `simulate failed:\n${sim.stderr.slice(-3000)}`);
  assert.equal(ended.code, 0, `the bot failed:\n${ended.stdout.slice(-2000)}\n${ended.stderr.slice(-2000)}`);

  assert.equal(
    readFileSync(path.join(dataDir, `synthetic-${STREAM.guilds}g-${STREAM.messages}m.ndjson`), "utf8"),
    readFileSync(path.join(dir, "expected.ndjson"), "utf8"),
    "simulate played the stream `synthetic` writes",
  );

  const line = ended.stdout.split("\n").find((l) => l.startsWith("summary "));
  assert.ok(line, `no summary line in the bot's output:\n${ended.stdout.slice(-2000)}`);
  const { pods } = JSON.parse(line.slice("summary ".length));
  assert.deepEqual(pods.map((p) => p.ordinal).sort(), [...Array(PODS).keys()], "a summary per pod");

  const guilds = stream.filter((f) => f.t === "GUILD_CREATE").map((f) => f.guild);
  const owner = owners(guilds, PODS);
  const inGuild = (t) => stream.filter((f) => f.t === t && f.guild !== null);
  const sum = (values) => values.reduce((a, b) => a + b, 0);

  assert.equal(sum(pods.map((p) => p.guilds)), STREAM.guilds, "guilds, over the pods");
  assert.equal(sum(pods.map((p) => p.messages)), inGuild("MESSAGE_CREATE").length, "guild messages, over the pods");
  assert.equal(sum(pods.map((p) => p.bans)), inGuild("GUILD_BAN_ADD").length, "bans, over the pods");
  for (const pod of pods) {
    const mine = (f) => owner.get(f.guild) === pod.ordinal;
    assert.equal(pod.guilds, guilds.filter((g) => owner.get(g) === pod.ordinal).length, `pod ${pod.ordinal}: guilds`);
    const perGuild = {};
    for (const f of inGuild("MESSAGE_CREATE").filter(mine)) perGuild[f.guild] = (perGuild[f.guild] ?? 0) + 1;
    assert.deepEqual(pod.messagesPerGuild, perGuild, `pod ${pod.ordinal}: messages per guild`);
    const commands = {};
    for (const { d } of inGuild("INTERACTION_CREATE").filter(mine)) commands[d.data.name] = (commands[d.data.name] ?? 0) + 1;
    assert.deepEqual(pod.interactions, commands, `pod ${pod.ordinal}: commands by name`);
  }
});
