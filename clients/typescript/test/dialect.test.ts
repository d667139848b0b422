// The Kysely dialect's requests and its reading of answers, against local HTTP servers on
// 127.0.0.1 that record each request and answer as scripted. They check request shapes only;
// what the pods do with the statements is tested against real pods (kysely.live.test.ts).

import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, beforeEach, describe, test } from "node:test";
import { CompiledQuery, sql, type Kysely } from "kysely";
import {
  firstKeyword,
  GatewayClient,
  GatewayError,
  GatewayUnsupportedError,
  statementRoute,
} from "../src/index.js";
import type { DB } from "./bot-db.js";

interface Recorded {
  method: string;
  path: string;
  authorization: string | undefined;
  body: Record<string, unknown>;
}

type Answer = { status: number; body: unknown };

/** A local HTTP server that records requests and answers each with `answer(request)`. */
class Recorder {
  readonly requests: Recorded[] = [];
  answer: (request: Recorded) => Answer = () => ({ status: 500, body: { error: "no answer scripted" } });
  #server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const text = Buffer.concat(chunks).toString("utf8");
      const recorded: Recorded = {
        method: req.method ?? "",
        path: req.url ?? "",
        authorization: req.headers.authorization,
        body: text === "" ? {} : (JSON.parse(text) as Record<string, unknown>),
      };
      this.requests.push(recorded);
      const { status, body } = this.answer(recorded);
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    });
  });

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.#server.listen(0, "127.0.0.1", resolve));
  }

  get url(): string {
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

const GUILD = "1325263406417087088";
const OTHER = "1325263460636662432";
const TOKEN = "dialect-test-token-0123";

const empty = { columns: [], rows: [] };
const written = (rows_affected: number, last_insert_rowid = 0, rows: unknown[][] = [], columns: string[] = []) => ({
  status: 200,
  body: { columns, rows, rows_affected, last_insert_rowid },
});

describe("the Kysely dialect", () => {
  const pod = new Recorder();
  const owner = new Recorder();
  let gateway: GatewayClient;
  let db: Kysely<DB>;

  before(async () => {
    await pod.start();
    await owner.start();
    // One pod: every guild's owner is the recorder `pod`.
    gateway = new GatewayClient({ pods: 1, podUrlTemplate: pod.url.replace(/:(\d+)$/, ":{ordinal+$1}"), token: TOKEN, timeoutMs: 5_000 });
    db = gateway.db<DB>(GUILD);
  });

  after(async () => {
    await pod.close();
    await owner.close();
  });

  beforeEach(() => {
    pod.requests.length = 0;
    owner.requests.length = 0;
    pod.answer = (request) =>
      request.path.endsWith("/execute") ? written(0) : { status: 200, body: empty };
  });

  const paths = () => pod.requests.map((r) => `${r.method} ${r.path}`);
  const READ = `POST /v1/guilds/${GUILD}/query`;
  const WRITE = `POST /v1/guilds/${GUILD}/execute`;

  test("a select goes to the owner's /query with the compiled SQL and parameters, nothing else", async () => {
    await db.selectFrom("reported_messages").select("id").where("guild_id", "=", GUILD).where("reason", "=", "spam").execute();
    assert.deepEqual(paths(), [READ]);
    const [request] = pod.requests;
    assert.equal(request?.authorization, `Bearer ${TOKEN}`);
    assert.deepEqual(request?.body, {
      sql: 'select "id" from "reported_messages" where "guild_id" = ? and "reason" = ?',
      parameters: [GUILD, "spam"],
    });
  });

  test("WITH ... SELECT is a read", async () => {
    await db
      .with("spam", (qb) => qb.selectFrom("reported_messages").select("guild_id").where("reason", "=", "spam"))
      .selectFrom("spam")
      .selectAll()
      .execute();
    assert.deepEqual(paths(), [READ]);
    assert.match(String(pod.requests[0]?.body["sql"]), /^with "spam" as/);
  });

  test("insert, update, delete, with or without RETURNING or a leading WITH, go to /execute", async () => {
    await db.insertInto("honeypot_config").values({ guild_id: GUILD, channel_id: "1" }).onConflict((c) => c.doNothing()).execute();
    await db.updateTable("guilds").set({ settings: "{}" }).where("id", "=", GUILD).execute();
    await db.deleteFrom("message_stats").where("message_id", "=", "1").execute();
    await db.insertInto("tickets_config").returningAll().values({ message_id: "2", role_id: "3" }).execute();
    await db.updateTable("escalations").set({ resolution: "ban" }).where("id", "=", "e").returning("id").execute();
    await db.deleteFrom("mod_actions").where("id", "=", "m").returningAll().execute();
    await db
      .with("old", (qb) => qb.selectFrom("message_cache").select("message_id").where("guild_id", "=", GUILD))
      .deleteFrom("message_cache")
      .where("message_id", "in", (eb) => eb.selectFrom("old").select("message_id"))
      .execute();
    assert.deepEqual(paths(), Array(7).fill(WRITE));
    assert.deepEqual(pod.requests[0]?.body, {
      sql: 'insert into "honeypot_config" ("guild_id", "channel_id") values (?, ?) on conflict do nothing',
      parameters: [GUILD, "1"],
    });
  });

  test("raw SQL: SELECT or WITH first is a read, anything else a write", async () => {
    await sql`select 1`.execute(db);
    await sql`  -- a comment
      /* another */ (SELECT 2)`.execute(db);
    await sql`WITH a AS (SELECT 1 AS x) SELECT x FROM a`.execute(db);
    await sql`insert into honeypot_config (guild_id, channel_id) values (${GUILD}, ${"9"})`.execute(db);
    await sql`create table t (a)`.execute(db);
    await db.executeQuery(CompiledQuery.raw("delete from honeypot_config where guild_id = ?", [GUILD]));
    await db.schema.createTable("x").addColumn("a", "text").execute();
    assert.deepEqual(paths(), [READ, READ, READ, WRITE, WRITE, WRITE, WRITE]);
    assert.deepEqual(pod.requests[3]?.body, {
      sql: "insert into honeypot_config (guild_id, channel_id) values (?, ?)",
      parameters: [GUILD, "9"],
    });
  });

  test("statementRoute and firstKeyword", () => {
    const raw = (text: string) => CompiledQuery.raw(text);
    assert.equal(statementRoute(raw("select 1")), "read");
    assert.equal(statementRoute(raw("\n\t with x as (select 1) select * from x")), "read");
    assert.equal(statementRoute(raw("with x as (select 1) insert into t select * from x")), "read");
    assert.equal(statementRoute(raw("pragma table_info(t)")), "write");
    assert.equal(statementRoute(raw("")), "write");
    assert.equal(statementRoute(db.selectFrom("guilds").selectAll().compile()), "read");
    assert.equal(statementRoute(db.insertInto("guilds").values({ id: "1" }).compile()), "write");
    assert.equal(firstKeyword("/* unclosed"), "");
    assert.equal(firstKeyword("-- only a comment"), "");
    assert.equal(firstKeyword("((Values(1)))"), "values");
  });

  test("read rows come back as objects, blobs as bytes", async () => {
    pod.answer = () => ({
      status: 200,
      body: { columns: ["id", "n", "b", "none"], rows: [["a", 1, { $blob: "AP8Q" }, null], ["b", 2.5, { $blob: "" }, null]] },
    });
    const rows = await sql<Record<string, unknown>>`select 1`.execute(db);
    assert.deepEqual(rows.rows, [
      { id: "a", n: 1, b: new Uint8Array([0, 255, 16]), none: null },
      { id: "b", n: 2.5, b: new Uint8Array([]), none: null },
    ]);
    assert.equal(rows.numAffectedRows, undefined);
  });

  test("a write's answer: rows_affected and (for an insert) last_insert_rowid as bigints, RETURNING rows as objects", async () => {
    pod.answer = () => written(1, 42);
    const [inserted] = await db.insertInto("honeypot_config").values({ guild_id: GUILD, channel_id: "1" }).execute();
    assert.equal(inserted?.numInsertedOrUpdatedRows, 1n);
    assert.equal(inserted?.insertId, 42n);

    pod.answer = () => written(3, 42);
    const [updated] = await db.updateTable("message_stats").set({ react_count: 0 }).where("guild_id", "=", GUILD).execute();
    assert.equal(updated?.numUpdatedRows, 3n);
    const [deleted] = await db.deleteFrom("message_stats").where("guild_id", "=", GUILD).execute();
    assert.equal(deleted?.numDeletedRows, 3n);

    pod.answer = () => written(0, 42);
    const [ignored] = await db.insertInto("honeypot_config").values({ guild_id: GUILD, channel_id: "1" }).onConflict((c) => c.doNothing()).execute();
    assert.equal(ignored?.numInsertedOrUpdatedRows, 0n);

    pod.answer = () => written(1, 7, [["m1", null, "r1"]], ["message_id", "channel_id", "role_id"]);
    const rows = await db.insertInto("tickets_config").returningAll().values({ message_id: "m1", role_id: "r1" }).execute();
    assert.deepEqual(rows, [{ message_id: "m1", channel_id: null, role_id: "r1" }]);

    // Raw: the driver's own result, insertId only for an insert.
    pod.answer = () => written(2, 9);
    const rawInsert = await sql`insert into t values (1), (2)`.execute(db);
    assert.equal(rawInsert.numAffectedRows, 2n);
    assert.equal(rawInsert.insertId, 9n);
    const rawUpdate = await sql`update t set a = 1`.execute(db);
    assert.equal(rawUpdate.numAffectedRows, 2n);
    assert.equal(rawUpdate.insertId, undefined);
  });

  test("a 421 is followed once to the owner it names, with the same body", async () => {
    pod.answer = () => ({
      status: 421,
      body: { error: "not the owner", guild_id: GUILD, ordinal: 1, pods: 2, strategy: "md5", shards: 1, url: owner.url, epoch: 2 },
    });
    owner.answer = () => written(1, 5);
    const [result] = await db.insertInto("mod_actions").values({
      id: "a", user_id: "u", guild_id: GUILD, action_type: "ban", created_at: "2026-01-01T00:00:00.000Z",
    }).execute();
    assert.equal(result?.numInsertedOrUpdatedRows, 1n);
    // fetch itself (the Fetch standard) retries a 421 once on a new connection before the
    // client sees it: the first pod gets the statement twice, and ran it neither time.
    assert.deepEqual(new Set(paths()), new Set([WRITE]));
    assert.ok(pod.requests.length <= 2);
    for (const request of pod.requests) assert.deepEqual(request.body, pod.requests[0]?.body);
    assert.deepEqual(owner.requests.map((r) => `${r.method} ${r.path}`), [WRITE]);
    assert.deepEqual(owner.requests[0]?.body, pod.requests[0]?.body);

    // A second 421 is an error, not a loop.
    owner.answer = pod.answer;
    owner.requests.length = 0;
    await assert.rejects(db.selectFrom("guilds").selectAll().execute(), (e: unknown) => e instanceof GatewayError && e.status === 421);
    assert.ok(owner.requests.length >= 1 && owner.requests.length <= 2);
    assert.deepEqual(new Set(owner.requests.map((r) => r.path)), new Set([`/v1/guilds/${GUILD}/query`]));
  });

  test("refusals are GatewayErrors with the status and the pod's message", async () => {
    const cases: [number, Record<string, unknown>][] = [
      [403, { error: "the statement changes a row of guild 1 in table reported_messages", table: "reported_messages" }],
      [409, { error: "UNIQUE constraint failed: reported_messages.reported_message_id" }],
      [503, { error: "guild is frozen for a rescale" }],
      [400, { error: "not one statement" }],
    ];
    for (const [status, body] of cases) {
      pod.answer = () => ({ status, body });
      await assert.rejects(
        db.updateTable("reported_messages").set({ deleted_at: "x" }).where("guild_id", "=", OTHER).execute(),
        (e: unknown) => {
          assert.ok(e instanceof GatewayError);
          assert.equal(e.status, status);
          assert.equal(e.error, body["error"]);
          assert.deepEqual(e.body, body);
          return true;
        },
      );
    }
  });

  test("transactions are refused before any request", async () => {
    await assert.rejects(
      db.transaction().execute(async (trx) => {
        await trx.insertInto("honeypot_config").values({ guild_id: GUILD, channel_id: "1" }).execute();
      }),
      (e: unknown) => e instanceof GatewayUnsupportedError && /no transactions/.test(e.message),
    );
    await assert.rejects(db.startTransaction().execute(), GatewayUnsupportedError);
    assert.deepEqual(paths(), []);
  });

  test("the cross-guild handle reads through /v1/query and refuses writes", async () => {
    const guilds = [GUILD, OTHER];
    pod.answer = () => ({
      status: 200,
      body: { columns: ["count"], rows: [[2]], pods: [{ ordinal: 0, url: pod.url, guilds, rows: 1 }] },
    });
    const cross = gateway.crossGuildDb<DB>(guilds);
    const rows = await cross
      .selectFrom("reported_messages")
      .select(({ fn }) => fn.count("guild_id").distinct().as("count"))
      .where("reported_user_id", "=", "u1")
      .where("reason", "=", "spam")
      .execute();
    assert.deepEqual(rows, [{ count: 2 }]);
    assert.deepEqual(paths(), ["POST /v1/query"]);
    assert.deepEqual(pod.requests[0]?.body, {
      guilds,
      sql: 'select count(distinct "guild_id") as "count" from "reported_messages" where "reported_user_id" = ? and "reason" = ?',
      parameters: ["u1", "spam"],
    });
    await sql`select 1`.execute(cross);
    assert.equal(pod.requests.length, 2);

    for (const write of [
      () => cross.insertInto("honeypot_config").values({ guild_id: GUILD, channel_id: "1" }).execute(),
      () => cross.deleteFrom("message_cache").execute(),
      () => sql`update guilds set settings = '{}'`.execute(cross),
    ]) {
      await assert.rejects(write(), (e: unknown) => e instanceof GatewayUnsupportedError && /read-only/.test(e.message));
    }
    assert.equal(pod.requests.length, 2);
    assert.throws(() => gateway.crossGuildDb<DB>([]), TypeError);
    assert.throws(() => gateway.db<DB>(""), TypeError);
  });

  test("streaming a select yields the answer as one chunk", async () => {
    pod.answer = () => ({ status: 200, body: { columns: ["id"], rows: [["1"], ["2"]] } });
    const seen: unknown[] = [];
    for await (const row of db.selectFrom("guilds").select("id").stream()) seen.push(row);
    assert.deepEqual(seen, [{ id: "1" }, { id: "2" }]);
  });
});
