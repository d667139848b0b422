// The client against a real 3-pod deployment: the pod binary (GUILD_GATEWAY_BIN, default
// ../../target/debug/guild-gateway) replays the sample stream, one SQLite file per pod.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import {
  GatewayClient,
  GatewayError,
  ownerOrdinal,
  ownerUrl,
  toObjects,
  type GatewayClientOptions,
  type GuildOwner,
} from "../src/index.js";
import { BIN, countOf, countStatement as count, expected, fixtures, startDeployment, type Deployment, type Pod } from "./deployment.js";

const PODS = 3;
const GUILDS = expected.guilds;
const messageIdsOf = (guild: string) =>
  expected.message_stats
    .filter((r) => r.guild_id === guild)
    .map((r) => r.message_id)
    .sort();

/** A TCP relay: lets a URL of the client's template land on a pod that does not own the guild. */
function relay(listenPort: number, targetPort: number): Promise<{ close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((inbound) => {
    const outbound = net.connect(targetPort, "127.0.0.1");
    for (const socket of [inbound, outbound]) {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
      socket.on("error", () => {
        inbound.destroy();
        outbound.destroy();
      });
    }
    inbound.pipe(outbound).pipe(inbound);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(listenPort, "127.0.0.1", () =>
      resolve({
        close: () =>
          new Promise<void>((done) => {
            for (const socket of sockets) socket.destroy();
            server.close(() => done());
          }),
      }),
    );
  });
}

describe("against a live 3-pod deployment", { timeout: 120_000 }, () => {
  let deployment: Deployment | undefined;
  let token = "";
  let base = 0;
  let template = "";
  let pods: Pod[] = [];
  let misroute: { close(): Promise<void> } | undefined;

  const options = (extra: Partial<GatewayClientOptions> = {}): GatewayClientOptions => ({
    pods: PODS,
    podUrlTemplate: template,
    token,
    timeoutMs: 10_000,
    ...extra,
  });

  /** A client whose fetch records every URL it calls. */
  const recording = (extra: Partial<GatewayClientOptions> = {}) => {
    const urls: string[] = [];
    const fetchAndRecord: typeof fetch = (input, init) => {
      urls.push(String(input));
      return fetch(input, init);
    };
    return { client: new GatewayClient(options({ ...extra, fetch: fetchAndRecord })), urls };
  };

  before(async () => {
    // Pods on base..base+2, and a relay to pod 0 on base+3.
    deployment = await startDeployment({ pods: PODS, spare: 1 });
    ({ token, base, template, pods } = deployment);
    misroute = await relay(base + PODS, base);
  });

  after(async () => {
    await misroute?.close();
    await deployment?.stop();
  });

  test("the sample has 8 guilds spread over the 3 pods", () => {
    assert.equal(GUILDS.length, 8);
    assert.equal(new Set(GUILDS.map((g) => ownerOrdinal(g, { pods: PODS }))).size, PODS);
  });

  test("ownerUrl and ownerOrdinal agree with GET /owner of every pod", async () => {
    for (const pod of pods) {
      for (const guild of GUILDS) {
        const response = await fetch(`${pod.url}/v1/guilds/${guild}/owner`, {
          headers: { authorization: `Bearer ${token}` },
        });
        assert.equal(response.status, 200);
        const owner: GuildOwner = {
          guild_id: guild,
          ordinal: ownerOrdinal(guild, { pods: PODS }),
          pods: PODS,
          strategy: "md5",
          // No DISCORD_SHARDS: the md5 default.
          shards: 1,
          url: ownerUrl(guild, { pods: PODS, podUrlTemplate: template }),
          // Pods that never rescaled follow their first ownership.
          epoch: 1,
        };
        assert.deepEqual(await response.json(), owner);
      }
    }
  });

  test("ownerOrdinal and ownerUrl agree with the binary's shard-of, both strategies", () => {
    const vectors = JSON.parse(readFileSync(path.join(fixtures, "shard_vectors.json"), "utf8")) as { guild_id: string }[];
    const all = vectors.map((v) => v.guild_id);
    const numeric = all.filter((id) => /^[0-9]+$/.test(id));
    const urlTemplate = "http://gateway-{ordinal}.gateway:3000";
    for (const [strategy, ids] of [["md5", all], ["discord", numeric]] as const) {
      for (const n of [1, 3, 7, 16]) {
        const run = spawnSync(
          BIN,
          ["shard-of", "--json", "--any-string", "--strategy", strategy, "--pods", String(n), "--pod-url-template", urlTemplate, ...ids],
          { encoding: "utf8", env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin" }, timeout: 30_000 },
        );
        assert.equal(run.status, 0, run.stderr);
        const owners = run.stdout.trim().split("\n").map((line) => JSON.parse(line) as GuildOwner);
        assert.deepEqual(owners.map((o) => o.guild_id), ids);
        for (const owner of owners) {
          const opts = { pods: n, strategy, podUrlTemplate: urlTemplate };
          assert.equal(ownerOrdinal(owner.guild_id, opts), owner.ordinal, `${strategy} ${n} ${owner.guild_id}`);
          assert.equal(ownerUrl(owner.guild_id, opts), owner.url);
          // Without --shards: 1 with md5, one shard per pod with discord.
          assert.equal(owner.shards, strategy === "discord" ? n : 1);
        }
      }
    }
  });

  test("ownerOrdinal with 8 shards agrees with shard-of --strategy discord --pods 3 --shards 8", () => {
    const vectors = JSON.parse(readFileSync(path.join(fixtures, "shard_vectors.json"), "utf8")) as { guild_id: string }[];
    const numeric = vectors.map((v) => v.guild_id).filter((id) => /^[0-9]+$/.test(id));
    assert.ok(numeric.length > 8);
    const run = spawnSync(BIN, ["shard-of", "--json", "--any-string", "--strategy", "discord", "--pods", "3", "--shards", "8", ...numeric], {
      encoding: "utf8",
      env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin" },
      timeout: 30_000,
    });
    assert.equal(run.status, 0, run.stderr);
    const owners = run.stdout.trim().split("\n").map((line) => JSON.parse(line) as GuildOwner);
    assert.deepEqual(owners.map((o) => o.guild_id), numeric);
    const ordinals = new Set<number>();
    for (const owner of owners) {
      assert.equal(owner.strategy, "discord");
      assert.equal(owner.pods, 3);
      assert.equal(owner.shards, 8);
      assert.equal(ownerOrdinal(owner.guild_id, { pods: 3, strategy: "discord", shards: 8 }), owner.ordinal, owner.guild_id);
      ordinals.add(owner.ordinal);
    }
    // The ids land on more than one pod, so the comparison says something.
    assert.ok(ordinals.size > 1);
  });

  test("query on each guild returns its rows from its owner", async () => {
    const { client, urls } = recording();
    for (const guild of GUILDS) {
      const [row] = toObjects(await client.query(guild, count(guild)));
      assert.deepEqual(row, { n: countOf(guild) }, guild);
      const ids = await client.query(guild, {
        sql: 'select "message_id" from "message_stats" where "guild_id" = ? order by "message_id"',
        parameters: [guild],
      });
      assert.deepEqual(ids.columns, ["message_id"]);
      assert.deepEqual(ids.rows.map((r) => r[0]), messageIdsOf(guild), guild);
    }
    // Straight to the owner each time: no 421 on the way.
    assert.equal(urls.length, 2 * GUILDS.length);
    for (const url of urls) assert.match(url, /\/v1\/guilds\/[0-9]+\/query$/);
  });

  test("blobs come back as bytes", async () => {
    const { client } = recording();
    const guild = GUILDS[0]!;
    const result = await client.query(guild, { sql: "select x'00ff10' as b, zeroblob(2) as z, 'x' as t", parameters: [] });
    assert.deepEqual(toObjects(result), [{ b: new Uint8Array([0, 255, 16]), z: new Uint8Array([0, 0]), t: "x" }]);
  });

  test("a client with a stale pod count follows the 421 to the owner", async () => {
    const { client, urls } = recording({ pods: 1 });
    const elsewhere = GUILDS.filter((g) => ownerOrdinal(g, { pods: PODS }) !== 0);
    assert.ok(elsewhere.length > 0);
    for (const guild of GUILDS) {
      urls.length = 0;
      const [row] = toObjects(await client.query(guild, count(guild)));
      assert.deepEqual(row, { n: countOf(guild) }, guild);
      const owner = `${ownerUrl(guild, { pods: PODS, podUrlTemplate: template })}/v1/guilds/${guild}/query`;
      const first = `${pods[0]?.url}/v1/guilds/${guild}/query`;
      assert.deepEqual(urls, elsewhere.includes(guild) ? [first, owner] : [first], guild);
    }
    const guild = elsewhere[0] ?? "";
    urls.length = 0;
    const settings = await client.settings.get(guild);
    assert.equal(settings?.guild_id, guild);
    assert.equal(urls.length, 2);
  });

  test("a template that points every ordinal at a non-owner still reaches the owner", async () => {
    // Ordinal k goes to pod k+1, and ordinal 2 to the relay in front of pod 0.
    const { client, urls } = recording({ podUrlTemplate: `http://127.0.0.1:{ordinal+${base + 1}}` });
    for (const guild of GUILDS) {
      urls.length = 0;
      const [row] = toObjects(await client.query(guild, count(guild)));
      assert.deepEqual(row, { n: countOf(guild) }, guild);
      const owner = ownerUrl(guild, { pods: PODS, podUrlTemplate: template });
      assert.equal(urls.length, 2, guild);
      assert.notEqual(new URL(urls[0] ?? "").origin, owner);
      assert.equal(urls[1], `${owner}/v1/guilds/${guild}/query`);
    }
  });

  test("queryGuilds merges the owners' rows; aggregates group by guild_id", async () => {
    const client = new GatewayClient(options());
    const marks = GUILDS.map(() => "?").join(", ");
    const result = await client.queryGuilds(GUILDS, {
      sql: `select "guild_id", count(*) as "n" from "message_stats" where "guild_id" in (${marks}) group by "guild_id"`,
      parameters: GUILDS,
    });
    assert.deepEqual(result.columns, ["guild_id", "n"]);
    const counts = Object.fromEntries(toObjects(result).map((r) => [r["guild_id"], r["n"]]));
    assert.equal(result.rows.length, GUILDS.length);
    assert.deepEqual(counts, Object.fromEntries(GUILDS.map((g) => [g, countOf(g)])));

    assert.equal(result.pods.reduce((sum, pod) => sum + pod.rows, 0), result.rows.length);
    assert.deepEqual(result.pods.flatMap((pod) => pod.guilds).sort(), [...GUILDS].sort());
    for (const pod of result.pods) {
      assert.equal(pod.url, `http://127.0.0.1:${base + pod.ordinal}`);
      for (const guild of pod.guilds) assert.equal(ownerOrdinal(guild, { pods: PODS }), pod.ordinal);
    }

    // Why the rule: without group by, each owner answers its own total.
    const totals = await client.queryGuilds(GUILDS, {
      sql: `select count(*) as "n" from "message_stats" where "guild_id" in (${marks})`,
      parameters: GUILDS,
    });
    assert.equal(totals.rows.length, PODS);
    assert.equal(
      totals.rows.reduce((sum, [n]) => sum + Number(n), 0),
      expected.message_stats.length,
    );
  });

  test("settings: patch merges, get returns the committed document, null removes a key", async () => {
    const client = new GatewayClient(options());
    const guild = GUILDS.find((g) => ownerOrdinal(g, { pods: PODS }) !== 0) ?? "";
    const before = (await client.settings.get(guild))?.settings ?? {};
    const first = await client.settings.patch(guild, { theme: "dark", limits: { daily: 5 } });
    assert.deepEqual(first, { guild_id: guild, settings: { ...before, theme: "dark", limits: { daily: 5 } } });
    assert.deepEqual(await client.settings.get(guild), first);
    const second = await client.settings.patch(guild, { theme: null, limits: { weekly: 9 } });
    assert.deepEqual(second, { guild_id: guild, settings: { ...before, limits: { daily: 5, weekly: 9 } } });
    assert.ok(!("theme" in second.settings));
    assert.deepEqual(await client.settings.get(guild), second);

    // A guild with no row yet: null, then the patch creates it.
    const fresh = "424242424242424242";
    assert.equal(await client.settings.get(fresh), null);
    assert.deepEqual(await client.settings.patch(fresh, { a: [1, 2] }), { guild_id: fresh, settings: { a: [1, 2] } });
    assert.deepEqual(await client.settings.get(fresh), { guild_id: fresh, settings: { a: [1, 2] } });
  });

  test("bad SQL is a 400 with the server's message", async () => {
    const client = new GatewayClient(options());
    const guild = GUILDS[0] ?? "";
    const e = await client.query(guild, { sql: "select * from no_such_table", parameters: [] }).then(
      () => assert.fail("no error"),
      (err: unknown) => err,
    );
    assert.ok(e instanceof GatewayError);
    assert.equal(e.status, 400);
    assert.match(e.error, /no_such_table/);
  });

  test("a wrong token throws GatewayError with status 401", async () => {
    const client = new GatewayClient(options({ token: "wrong-token-0123456789" }));
    const guild = GUILDS[0] ?? "";
    for (const call of [
      () => client.query(guild, count(guild)),
      () => client.queryGuilds(GUILDS, count(guild)),
      () => client.settings.get(guild),
      () => client.settings.patch(guild, { a: 1 }),
    ]) {
      await assert.rejects(call(), (e: unknown) => {
        assert.ok(e instanceof GatewayError);
        assert.equal(e.status, 401);
        assert.equal(e.error, "wrong API token");
        return true;
      });
    }
  });
});
