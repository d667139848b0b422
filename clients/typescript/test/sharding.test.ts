// Ownership and URLs, checked against the shared vectors that the bot's services produced.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { getShardForGuild, md5U32, ownerOrdinal, ownerUrl, podUrl, toObjects } from "../src/index.js";

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
