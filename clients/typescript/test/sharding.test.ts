// Ownership and URLs, checked against the shared vectors that the bot's services produced.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import {
  defaultShards,
  GatewayClient,
  getShardForGuild,
  md5U32,
  ownerOrdinal,
  ownerUrl,
  podUrl,
  toObjects,
} from "../src/index.js";

// Compiled to dist/test/, two levels below the package.
const packageDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const fixtures = path.resolve(packageDir, "../../../shared/fixtures");

interface Vector {
  guild_id: string;
  md5_u32: number;
  shard: Record<string, number>;
}

const vectors = JSON.parse(readFileSync(path.join(fixtures, "shard_vectors.json"), "utf8")) as Vector[];
const podCounts = [...new Set(vectors.flatMap((v) => Object.keys(v.shard).map(Number)))].sort((a, b) => a - b);

describe("shard_vectors.json", () => {
  test("has vectors, odd ids included", () => {
    assert.ok(vectors.length > 8);
    assert.ok(podCounts.length > 1);
    for (const odd of ["", "not-a-snowflake", "18446744073709551615"]) {
      assert.ok(vectors.some((v) => v.guild_id === odd), `no vector for ${JSON.stringify(odd)}`);
    }
    assert.ok(vectors.some((v) => /[^\x00-\x7f]/.test(v.guild_id)), "no non-ASCII vector");
  });

  test("md5U32 matches every vector", () => {
    for (const v of vectors) {
      assert.equal(md5U32(v.guild_id), v.md5_u32, `md5U32(${JSON.stringify(v.guild_id)})`);
    }
  });

  for (const pods of podCounts) {
    test(`getShardForGuild and ownerOrdinal (md5) match every vector for ${pods} pods`, () => {
      let checked = 0;
      for (const v of vectors) {
        const expected = v.shard[String(pods)];
        if (expected === undefined) continue;
        const id = JSON.stringify(v.guild_id);
        assert.equal(getShardForGuild(v.guild_id, pods), expected, `getShardForGuild(${id}, ${pods})`);
        assert.equal(ownerOrdinal(v.guild_id, { pods }), expected, `ownerOrdinal(${id}, ${pods})`);
        assert.equal(ownerOrdinal(v.guild_id, { pods, strategy: "md5" }), expected);
        checked++;
      }
      assert.ok(checked > 0);
    });
  }
});

describe("ownership", () => {
  test("the discord strategy is (id >> 22) % pods over 64-bit ids", () => {
    const numeric = vectors.filter((v) => /^[0-9]+$/.test(v.guild_id));
    assert.ok(numeric.length > 8);
    for (const v of numeric) {
      for (const pods of [1, 2, 3, 7, 16]) {
        const expected = Number((BigInt(v.guild_id) >> 22n) % BigInt(pods));
        assert.equal(ownerOrdinal(v.guild_id, { pods, strategy: "discord" }), expected, v.guild_id);
      }
    }
    assert.equal(ownerOrdinal("18446744073709551615", { pods: 7, strategy: "discord" }), 0);
    assert.equal(ownerOrdinal("1325263406417087088", { pods: 7, strategy: "discord" }), 2);
  });

  test("the discord strategy refuses what is not an unsigned 64-bit number", () => {
    for (const bad of ["", "not-a-snowflake", "h\u00e9llo", "  12 ", "-1", "1e3", "0x10", "18446744073709551616"]) {
      assert.throws(() => ownerOrdinal(bad, { pods: 3, strategy: "discord" }), TypeError, JSON.stringify(bad));
    }
  });

  test("a pod count below 1 or fractional is refused", () => {
    for (const pods of [0, -1, 1.5, Number.NaN]) {
      assert.throws(() => getShardForGuild("1", pods), RangeError);
      assert.throws(() => ownerOrdinal("1", { pods, strategy: "discord" }), RangeError);
    }
    assert.throws(() => ownerOrdinal("1", { pods: 3, strategy: "crc32" as "md5" }), TypeError);
  });
});

describe("the Discord shard count", () => {
  const numeric = vectors.filter((v) => /^[0-9]+$/.test(v.guild_id)).map((v) => v.guild_id);

  test("discord with 8 shards over 3 pods: shard (id >> 22) % 8, on pod shard % 3", () => {
    assert.ok(numeric.length > 8);
    const owners = new Set<number>();
    for (const id of numeric) {
      const shard = (BigInt(id) >> 22n) % 8n;
      const expected = Number(shard % 3n);
      assert.equal(ownerOrdinal(id, { pods: 3, strategy: "discord", shards: 8 }), expected, id);
      assert.equal(
        ownerUrl(id, { pods: 3, strategy: "discord", shards: 8, podUrlTemplate: "http://gw-{ordinal}:3000" }),
        `http://gw-${expected}:3000`,
      );
      owners.add(expected);
    }
    assert.equal(owners.size, 3);
    // The shard count moves guilds: 8 shards do not place them as the default 3 would.
    assert.ok(numeric.some((id) => ownerOrdinal(id, { pods: 3, strategy: "discord", shards: 8 }) !== ownerOrdinal(id, { pods: 3, strategy: "discord" })));
    // Shards are dealt round robin: pod 0 runs 0, 3, 6; pod 1 runs 1, 4, 7; pod 2 runs 2, 5.
    for (let shard = 0n; shard < 16n; shard++) {
      const id = String((shard << 22n) | 12345n);
      assert.equal(ownerOrdinal(id, { pods: 3, strategy: "discord", shards: 8 }), Number((shard % 8n) % 3n), id);
    }
    assert.equal(ownerOrdinal("1325263406417087088", { pods: 3, strategy: "discord", shards: 8 }), 2);
    assert.equal(ownerOrdinal("1325263406417087088", { pods: 3, strategy: "discord" }), 1);
    assert.equal(ownerOrdinal("18446744073709551615", { pods: 3, strategy: "discord", shards: 8 }), 1);
  });

  test("with shards = pods (the default) discord is (id >> 22) % pods, as before", () => {
    for (const id of numeric) {
      for (const pods of [1, 2, 3, 7, 16]) {
        const old = Number((BigInt(id) >> 22n) % BigInt(pods));
        assert.equal(ownerOrdinal(id, { pods, strategy: "discord", shards: pods }), old, `${id} ${pods}`);
        assert.equal(ownerOrdinal(id, { pods, strategy: "discord" }), old, `${id} ${pods}`);
      }
    }
    assert.equal(defaultShards("discord", 7), 7);
    assert.equal(defaultShards("md5", 7), 1);
  });

  test("md5 ignores the shard count", () => {
    for (const v of vectors) {
      for (const [pods, expected] of Object.entries(v.shard)) {
        for (const shards of [1, 2, 8, 1024, 65_536]) {
          const id = JSON.stringify(v.guild_id);
          assert.equal(ownerOrdinal(v.guild_id, { pods: Number(pods), shards }), expected, `${id} ${pods} ${shards}`);
          assert.equal(ownerOrdinal(v.guild_id, { pods: Number(pods), strategy: "md5", shards }), expected);
        }
      }
    }
  });

  test("a shard count the pods would refuse is refused", () => {
    const template = "http://gw-{ordinal}:3000";
    const refused = (pods: number, strategy: "md5" | "discord", shards: number) => {
      const what = `${strategy} pods=${pods} shards=${shards}`;
      assert.throws(() => ownerOrdinal("1325263406417087088", { pods, strategy, shards }), RangeError, what);
      assert.throws(() => ownerUrl("1325263406417087088", { pods, strategy, shards, podUrlTemplate: template }), RangeError, what);
      assert.throws(() => new GatewayClient({ pods, strategy, shards, podUrlTemplate: template, token: "t" }), RangeError, what);
    };
    for (const strategy of ["md5", "discord"] as const) {
      for (const shards of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 65_537, "8" as unknown as number]) {
        refused(1, strategy, shards);
      }
    }
    // discord: every pod needs at least one shard.
    refused(3, "discord", 1);
    refused(3, "discord", 2);
    refused(16, "discord", 8);
    assert.equal(ownerOrdinal("1325263406417087088", { pods: 3, strategy: "discord", shards: 3 }), 1);
    assert.equal(ownerOrdinal("1325263406417087088", { pods: 1, strategy: "discord", shards: 65_536 }), 0);
    // md5: any count from 1, fewer than the pods included (each pod runs every shard).
    assert.equal(ownerOrdinal("1325263406417087088", { pods: 3, shards: 1 }), getShardForGuild("1325263406417087088", 3));
    assert.equal(ownerOrdinal("1325263406417087088", { pods: 3, strategy: "md5", shards: 2 }), getShardForGuild("1325263406417087088", 3));
  });
});

describe("pod URLs", () => {
  test("{ordinal} and {ordinal+N} as the pods expand them", () => {
    assert.equal(podUrl("http://gateway-{ordinal}.gateway:3000", 2), "http://gateway-2.gateway:3000");
    assert.equal(podUrl("http://127.0.0.1:{ordinal+27500}/", 0), "http://127.0.0.1:27500");
    assert.equal(podUrl("http://127.0.0.1:{ordinal+27500}/", 11), "http://127.0.0.1:27511");
    assert.equal(podUrl("https://gw-{ordinal}.example/api/", 1), "https://gw-1.example/api");
  });

  test("templates the pods would refuse are refused", () => {
    for (const bad of [
      "http://gateway:3000",
      "gateway-{ordinal}:3000",
      "http://x-{ordinal-1}",
      "http://x-{ordinal+}",
      "http://x-{ordinal",
      "http://{ordinal}-{ordinal}",
    ]) {
      assert.throws(() => podUrl(bad, 0), TypeError, bad);
    }
    assert.throws(() => podUrl("http://x-{ordinal}", -1), RangeError);
  });

  test("ownerUrl is the owner's ordinal put in the template", () => {
    const template = "http://gateway-{ordinal}.gateway:3000";
    for (const v of vectors) {
      const expected = v.shard["3"];
      assert.equal(ownerUrl(v.guild_id, { pods: 3, podUrlTemplate: template }), `http://gateway-${expected}.gateway:3000`);
    }
    assert.equal(
      ownerUrl("1325263406417087088", { pods: 7, strategy: "discord", podUrlTemplate: "http://127.0.0.1:{ordinal+100}" }),
      "http://127.0.0.1:102",
    );
  });
});

test("toObjects keys each row by column name", () => {
  assert.deepEqual(
    toObjects({ columns: ["guild_id", "n", "__proto__"], rows: [["1", 2, "x"], ["3", null, null]] }),
    [
      Object.fromEntries([["guild_id", "1"], ["n", 2], ["__proto__", "x"]]),
      Object.fromEntries([["guild_id", "3"], ["n", null], ["__proto__", null]]),
    ],
  );
  const [first] = toObjects({ columns: ["__proto__"], rows: [[{ polluted: true }]] });
  assert.equal(Object.getPrototypeOf(first), Object.prototype);
  assert.deepEqual(toObjects({ columns: ["a"], rows: [] }), []);
});
