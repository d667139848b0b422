// The client's requests and its handling of answers, against a scripted fetch (no pods).

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { GatewayClient, GatewayError, ownerOrdinal, type MisdirectedBody } from "../src/index.js";

interface Call {
  url: string;
  method: string;
  headers: Record<string, string>;
  body: string | undefined;
}

type Reply = { status: number; body?: unknown; text?: string } | ((call: Call, signal: AbortSignal) => Promise<Response>);

/** A fetch that records each call and answers the scripted replies in order. */
function scripted(...replies: Reply[]): { fetch: typeof fetch; calls: Call[] } {
  const calls: Call[] = [];
  const fake = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const call: Call = {
      url: String(input),
      method: init?.method ?? "GET",
      headers: Object.fromEntries(new Headers(init?.headers).entries()),
      body: typeof init?.body === "string" ? init.body : undefined,
    };
    calls.push(call);
    const reply = replies.shift();
    if (reply === undefined) throw new Error(`unexpected call ${call.method} ${call.url}`);
    if (typeof reply === "function") return reply(call, init?.signal as AbortSignal);
    const text = reply.text ?? (reply.body === undefined ? "" : JSON.stringify(reply.body));
    return new Response(text, { status: reply.status, headers: { "content-type": "application/json" } });
  };
  return { fetch: fake as typeof fetch, calls };
}

const TEMPLATE = "http://gw-{ordinal}.test:3000";
const TOKEN = "test-token-0123456789";
const GUILD = "1325263406417087088";
const OWNER = ownerOrdinal(GUILD, { pods: 3 });
const OWNER_URL = `http://gw-${OWNER}.test:3000`;

function client(fetchImpl: typeof fetch, pods = 3, timeoutMs?: number): GatewayClient {
  return new GatewayClient({ pods, podUrlTemplate: TEMPLATE, token: TOKEN, fetch: fetchImpl, ...(timeoutMs ? { timeoutMs } : {}) });
}

function misdirected(url: string) {
  const body: MisdirectedBody = {
    error: `guild ${GUILD} is owned by pod 2 (${url})`,
    guild_id: GUILD,
    ordinal: 2,
    pods: 3,
    strategy: "md5",
    shards: 1,
    url,
  };
  return { status: 421, body };
}

async function rejectsWith(promise: Promise<unknown>, status: number, error?: string | RegExp): Promise<GatewayError> {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof GatewayError, `not a GatewayError: ${String(e)}`);
    assert.equal(e.status, status, e.message);
    if (typeof error === "string") assert.equal(e.error, error);
    else if (error) assert.match(e.error, error);
    return e;
  }
  assert.fail("no error was thrown");
}

describe("query", () => {
  test("sends sql and parameters, and nothing else of a compiled query, to the owner", async () => {
    const { fetch, calls } = scripted({ status: 200, body: { columns: ["n"], rows: [[27]] } });
    // Kysely's CompiledQuery also carries its syntax tree and id, which the pods would refuse.
    const compiled = {
      sql: 'select count(*) as "n" from "message_stats" where "guild_id" = ? and "sent_at" > ?',
      parameters: [GUILD, 9007199254740993n, true, null, undefined] as readonly unknown[],
      query: { kind: "SelectQueryNode" },
      queryId: { queryId: "x" },
    };
    assert.deepEqual(await client(fetch).query(GUILD, compiled), { columns: ["n"], rows: [[27]] });
    assert.equal(calls.length, 1);
    const [call] = calls;
    assert.equal(call?.method, "POST");
    assert.equal(call?.url, `${OWNER_URL}/v1/guilds/${GUILD}/query`);
    assert.equal(call?.headers["authorization"], `Bearer ${TOKEN}`);
    assert.equal(call?.headers["content-type"], "application/json");
    assert.equal(
      call?.body,
      `{"sql":${JSON.stringify(compiled.sql)},"parameters":["${GUILD}",9007199254740993,true,null,null]}`,
    );
  });

  test("follows one 421 to the owner it names", async () => {
    const { fetch, calls } = scripted(misdirected("http://gw-9.test:3000/"), { status: 200, body: { columns: [], rows: [] } });
    await client(fetch, 1).query(GUILD, { sql: "select 1", parameters: [] });
    assert.deepEqual(
      calls.map((c) => c.url),
      [`http://gw-0.test:3000/v1/guilds/${GUILD}/query`, `http://gw-9.test:3000/v1/guilds/${GUILD}/query`],
    );
    assert.equal(calls[1]?.body, calls[0]?.body);
  });

  test("a second 421 is an error, not a loop", async () => {
    const { fetch, calls } = scripted(misdirected("http://gw-1.test:3000"), misdirected("http://gw-2.test:3000"));
    const e = await rejectsWith(client(fetch).query(GUILD, { sql: "select 1", parameters: [] }), 421, /owned by pod 2/);
    assert.equal(calls.length, 2);
    assert.equal(e.url, `http://gw-1.test:3000/v1/guilds/${GUILD}/query`);
    assert.equal((e.body as { url: string }).url, "http://gw-2.test:3000");
  });

  test("a 421 without an owner URL is an error", async () => {
    const { fetch, calls } = scripted({ status: 421, body: { error: "misdirected" } });
    await rejectsWith(client(fetch).query(GUILD, { sql: "select 1", parameters: [] }), 421, "misdirected");
    assert.equal(calls.length, 1);
  });

  for (const [status, error] of [
    [400, "the statement is refused: only reads"],
    [401, "wrong API token"],
    [403, "the data API is disabled on this pod: API_TOKEN is not set"],
    [413, "the body is over the limit of 1024 bytes (API_MAX_BODY_BYTES)"],
    [422, "more than 50000 rows"],
    [502, "pod 1 failed"],
    [503, "busy"],
    [504, "the query took more than 5000 ms"],
  ] as const) {
    test(`a ${status} throws GatewayError with the server's message`, async () => {
      const { fetch } = scripted({ status, body: { error } });
      const e = await rejectsWith(client(fetch).query(GUILD, { sql: "select 1", parameters: [] }), status, error);
      assert.ok(e.message.includes(error));
    });
  }

  test("an answer that is not JSON keeps its text as the message", async () => {
    const { fetch } = scripted({ status: 502, text: "<html>Bad Gateway</html>" });
    await rejectsWith(client(fetch).query(GUILD, { sql: "select 1", parameters: [] }), 502, "<html>Bad Gateway</html>");
    const ok = scripted({ status: 200, text: "not json" });
    await rejectsWith(client(ok.fetch).query(GUILD, { sql: "select 1", parameters: [] }), 200, /not a JSON object/);
  });

  test("no answer is status 0, network error and timeout alike", async () => {
    const refused = scripted(async () => {
      throw new TypeError("fetch failed", { cause: new Error("connect ECONNREFUSED 127.0.0.1:1") });
    });
    await rejectsWith(client(refused.fetch).query(GUILD, { sql: "select 1", parameters: [] }), 0, /ECONNREFUSED/);
    const silent = scripted(
      (_call, signal) =>
        new Promise<Response>((_resolve, reject) => {
          // AbortSignal.timeout's timer does not keep Node alive; a real socket would.
          const alive = setTimeout(() => reject(new Error("the client's timeout never fired")), 5_000);
          signal.addEventListener("abort", () => {
            clearTimeout(alive);
            reject(signal.reason);
          });
        }),
    );
    await rejectsWith(client(silent.fetch, 3, 50).query(GUILD, { sql: "select 1", parameters: [] }), 0, /within 50 ms/);
  });

  test("refuses what the pods would refuse before sending", async () => {
    const { fetch, calls } = scripted();
    assert.throws(() => client(fetch, 0), RangeError);
    assert.throws(() => new GatewayClient({ pods: 3, podUrlTemplate: "http://gw:3000", token: TOKEN }), TypeError);
    assert.throws(() => new GatewayClient({ pods: 3, podUrlTemplate: TEMPLATE, token: "" }), TypeError);
    await assert.rejects(client(fetch).query(GUILD, { sql: 1 as unknown as string, parameters: [] }), TypeError);
    await assert.rejects(client(fetch).queryGuilds([], { sql: "select 1", parameters: [] }), TypeError);
    assert.equal(calls.length, 0);
  });
});

describe("the shard count", () => {
  test("defaults to 1 with md5 and to the pod count with discord", () => {
    const { fetch } = scripted();
    assert.equal(client(fetch).shards, 1);
    const discord = new GatewayClient({ pods: 3, strategy: "discord", podUrlTemplate: TEMPLATE, token: TOKEN, fetch });
    assert.equal(discord.shards, 3);
    assert.equal(discord.ownerOrdinal(GUILD), Number((BigInt(GUILD) >> 22n) % 3n));
  });

  test("a discord client sends each guild to the pod that runs its shard", async () => {
    // Shard (id >> 22) % 8 = 5 runs on pod 5 % 3 = 2; with the default 3 shards it would be pod 1.
    const owner = Number(((BigInt(GUILD) >> 22n) % 8n) % 3n);
    assert.equal(owner, 2);
    const { fetch, calls } = scripted({ status: 200, body: { columns: [], rows: [] } }, { status: 200, body: { guild_id: GUILD, settings: {} } });
    const discord = new GatewayClient({ pods: 3, strategy: "discord", shards: 8, podUrlTemplate: TEMPLATE, token: TOKEN, fetch });
    assert.equal(discord.shards, 8);
    assert.equal(discord.ownerOrdinal(GUILD), owner);
    assert.equal(discord.ownerUrl(GUILD), `http://gw-${owner}.test:3000`);
    await discord.query(GUILD, { sql: "select 1", parameters: [] });
    await discord.settings.get(GUILD);
    assert.deepEqual(
      calls.map((c) => c.url),
      [`http://gw-2.test:3000/v1/guilds/${GUILD}/query`, `http://gw-2.test:3000/v1/guilds/${GUILD}/settings`],
    );
  });

  test("md5 clients own the same guilds whatever the shard count", () => {
    const { fetch } = scripted();
    for (const shards of [1, 2, 8, 64]) {
      const md5 = new GatewayClient({ pods: 3, shards, podUrlTemplate: TEMPLATE, token: TOKEN, fetch });
      assert.equal(md5.shards, shards);
      assert.equal(md5.ownerOrdinal(GUILD), OWNER);
    }
  });

  test("a shard count the pods would refuse is refused before sending", () => {
    const { fetch, calls } = scripted();
    for (const [strategy, shards] of [["md5", 0], ["discord", 0], ["discord", 2], ["md5", 2.5], ["md5", 65_537]] as const) {
      assert.throws(
        () => new GatewayClient({ pods: 3, strategy, shards, podUrlTemplate: TEMPLATE, token: TOKEN, fetch }),
        RangeError,
        `${strategy} ${shards}`,
      );
    }
    assert.equal(calls.length, 0);
  });
});

describe("queryGuilds", () => {
  test("posts the guilds and the statement to the first guild's owner", async () => {
    const answer = {
      columns: ["guild_id", "n"],
      rows: [[GUILD, 1]],
      pods: [{ ordinal: OWNER, url: OWNER_URL, guilds: [GUILD], rows: 1 }],
    };
    const { fetch, calls } = scripted({ status: 200, body: answer });
    const sql = "select guild_id, count(*) as n from message_stats where guild_id in (?, ?) group by guild_id";
    assert.deepEqual(await client(fetch).queryGuilds([GUILD, "1"], { sql, parameters: [GUILD, "1"] }), answer);
    assert.equal(calls[0]?.url, `${OWNER_URL}/v1/query`);
    assert.deepEqual(JSON.parse(calls[0]?.body ?? ""), { guilds: [GUILD, "1"], sql, parameters: [GUILD, "1"] });
  });
});

describe("settings", () => {
  test("get is null when the guild has no row", async () => {
    const { fetch, calls } = scripted({ status: 404, body: { error: `guild ${GUILD} has no settings row` } });
    assert.equal(await client(fetch).settings.get(GUILD), null);
    assert.equal(calls[0]?.method, "GET");
    assert.equal(calls[0]?.url, `${OWNER_URL}/v1/guilds/${GUILD}/settings`);
    assert.equal(calls[0]?.body, undefined);
  });

  test("patch sends a merge patch and follows one 421", async () => {
    const committed = { guild_id: GUILD, settings: { a: 1 } };
    const { fetch, calls } = scripted(misdirected(OWNER_URL), { status: 200, body: committed });
    assert.deepEqual(await client(fetch, 1).settings.patch(GUILD, { a: 1, b: null }), committed);
    assert.deepEqual(
      calls.map((c) => [c.method, c.url, c.body]),
      [
        ["PATCH", `http://gw-0.test:3000/v1/guilds/${GUILD}/settings`, '{"a":1,"b":null}'],
        ["PATCH", `${OWNER_URL}/v1/guilds/${GUILD}/settings`, '{"a":1,"b":null}'],
      ],
    );
  });

  test("get follows one 421 and a second one throws", async () => {
    const once = scripted(misdirected(OWNER_URL), { status: 200, body: { guild_id: GUILD, settings: {} } });
    assert.deepEqual(await client(once.fetch, 1).settings.get(GUILD), { guild_id: GUILD, settings: {} });
    const twice = scripted(misdirected(OWNER_URL), misdirected(OWNER_URL));
    await rejectsWith(client(twice.fetch, 1).settings.get(GUILD), 421);
  });

  test("a patch that is not an object is refused", async () => {
    const { fetch, calls } = scripted();
    for (const bad of [null, [1], "x"]) {
      await assert.rejects(client(fetch).settings.patch(GUILD, bad as unknown as Record<string, unknown>), TypeError);
    }
    assert.equal(calls.length, 0);
  });

  test("other errors throw", async () => {
    const { fetch } = scripted({ status: 503, body: { error: "the writer is unavailable" } });
    await rejectsWith(client(fetch).settings.patch(GUILD, { a: 1 }), 503, "the writer is unavailable");
  });
});
