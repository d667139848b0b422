// The bot's own Kysely statements through the dialect against a real 3-pod deployment, and the
// same statements through Kysely's SqliteDialect on one plain SQLite file with the bot's
// schema (test/bot-schema.sql, better-sqlite3): every write the bot makes, table by table, for
// all 8 guilds of the sample (on all 3 pods), each answer compared, then the rows of every
// bot table. Then the pods' refusals, through the dialect, and the bot's cross-guild read.
//
// The pods replay the sample first, so they know the guilds' channels (tickets_config and
// channel_info are tied to a guild through them) and hold rows of their own. Before any write,
// the plain file gets a copy of those rows of the bot's tables, so both sides start equal and
// every table can be compared whole, per guild. Ids and timestamps are fixed, so rows compare
// exactly; the only clock values are the two columns whose default is CURRENT_TIMESTAMP and
// that the bot leaves to it (escalation_records.voted_at, reactji_channeler_config.created_at),
// compared as "a time during this test".

import assert from "node:assert/strict";
import path from "node:path";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import Database from "better-sqlite3";
import { DeleteResult, InsertResult, Kysely, SqliteDialect, sql, UpdateResult } from "kysely";
import { GatewayClient, GatewayError, GatewayUnsupportedError, ownerOrdinal, toObjects } from "../src/index.js";
import { BOT_TABLES, type BotTable, type DB } from "./bot-db.js";
import * as bot from "./bot-statements.js";
import { expected, packageDir, startDeployment, type Deployment } from "./deployment.js";

const PODS = 3;
const GUILDS = expected.guilds;
const SCHEMA = readFileSync(path.join(packageDir, "test", "bot-schema.sql"), "utf8");

// --- fixed ids and times ---

const T0 = Date.UTC(2026, 10, 1, 12, 0, 0);
/** A fixed time, `s` seconds after T0, as the bot writes times (toISOString). */
const at = (s: number) => new Date(T0 + s * 1000).toISOString();
/** A fixed uuid: crypto.randomUUID()'s shape, the parts in its last group. */
const uuid = (...parts: number[]) =>
  `00000000-0000-4000-8000-${parts.map((p) => p.toString(16).padStart(4, "0")).join("").padStart(12, "0").slice(-12)}`;
/** A fixed snowflake, unlike the sample's. */
const snow = (i: number, k: number) => String(1_400_000_000_000_000_000n + BigInt(i * 1000 + k));
const user = (k: number) => String(1_300_000_000_000_000_000n + BigInt(k));
/** The user reported for spam in several guilds (the cross-guild read). */
const SPAMMER = user(999);
const spamGuilds = () => GUILDS.filter((_, i) => i % 4 !== 3);

// --- comparing outcomes ---

/** What a statement's result says, the same whichever driver ran it. */
function normalize(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(normalize);
  if (value instanceof InsertResult) {
    const inserted = value.numInsertedOrUpdatedRows;
    // An insert's insertId is SQLite's last_insert_rowid, whose value differs between files.
    if (inserted !== undefined && inserted > 0n) assert.equal(typeof value.insertId, "bigint");
    return { inserted: String(inserted) };
  }
  if (value instanceof UpdateResult) return { updated: String(value.numUpdatedRows) };
  if (value instanceof DeleteResult) return { deleted: String(value.numDeletedRows) };
  if (typeof value === "bigint") return String(value);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalize(v)]));
  }
  return value;
}

/** The same failure from either side: a constraint (409 / SQLITE_CONSTRAINT_*) or what it said. */
function failure(e: unknown): string {
  if (e instanceof GatewayError) return e.status === 409 ? "constraint" : `gateway ${e.status}: ${e.error}`;
  const code = (e as { code?: unknown })?.code;
  if (typeof code === "string" && code.startsWith("SQLITE_CONSTRAINT")) return "constraint";
  return `${typeof code === "string" ? code : "error"}: ${e instanceof Error ? e.message : String(e)}`;
}

async function outcome(run: () => Promise<unknown>): Promise<unknown> {
  try {
    return { ok: normalize(await run()) };
  } catch (e) {
    return { error: failure(e) };
  }
}

// --- reading a guild's rows of a bot table, the same way on both sides ---

const CLOCK_COLUMNS: Partial<Record<BotTable, string>> = {
  escalation_records: "voted_at",
  reactji_channeler_config: "created_at",
};

describe("the bot's Kysely statements: a 3-pod deployment through the dialect = one SQLite file", { timeout: 120_000 }, () => {
  let deployment: Deployment | undefined;
  let gateway: GatewayClient;
  let file: Database.Database;
  let reference: Kysely<DB>;
  let started = 0;
  /** Each guild's channels, as the pods know them (guild_channels). */
  const channels = new Map<string, string[]>();
  /** The tickets_config messages written for each guild (a row may have no channel). */
  const tickets = new Map<string, string[]>();
  let columns: Record<string, string[]> = {};

  /** The guild's rows of a table on one side, sorted, as JSON lines. */
  async function rowsOf(db: Kysely<any>, table: BotTable, guild: string): Promise<string[]> {
    const chans = channels.get(guild) ?? [];
    const list = columns[table] ?? [];
    // The bot's guilds.id is declared serial: NUMERIC affinity stores a snowflake there as an
    // INTEGER, which the gateway keeps as TEXT. Both read as text.
    const select = list.map((c) => (table === "guilds" && c === "id" ? sql<string>`cast("id" as text)`.as("id") : c));
    let query = db.selectFrom(table).select(select as any);
    switch (table) {
      case "guilds":
        query = query.where(sql`cast("id" as text)`, "=", guild);
        break;
      case "escalation_records":
        query = query.where("escalation_id", "in", db.selectFrom("escalations").select("id").where("guild_id", "=", guild));
        break;
      case "tickets_config":
        query = query.where((eb: any) =>
          eb.or([eb("channel_id", "in", chans), eb("message_id", "in", [...(tickets.get(guild) ?? []), ""])]),
        );
        break;
      case "channel_info":
        query = query.where("id", "in", chans);
        break;
      default:
        query = query.where("guild_id", "=", guild);
    }
    const rows = (await query.execute()) as Record<string, unknown>[];
    const clock = CLOCK_COLUMNS[table];
    return rows
      .map((row) => {
        if (clock !== undefined) {
          const value = row[clock];
          // SQLite's CURRENT_TIMESTAMP, UTC, during this test (a minute of slack for the second).
          if (typeof value === "string" && /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/.test(value)) {
            const t = Date.parse(`${value.replace(" ", "T")}Z`);
            if (t >= started - 60_000 && t <= Date.now() + 60_000) row[clock] = "<CURRENT_TIMESTAMP during the test>";
          }
        }
        return JSON.stringify(row);
      })
      .sort();
  }

  async function compareTable(table: BotTable): Promise<void> {
    for (const guild of GUILDS) {
      const [pods, plain] = [await rowsOf(gateway.db(guild), table, guild), await rowsOf(reference, table, guild)];
      assert.deepEqual(pods, plain, `${table} of guild ${guild} (pod ${ownerOrdinal(guild, { pods: PODS })}): gateway vs the plain file`);
    }
  }

  /**
   * Runs the same bot code on the guild's gateway handle and on the plain file, and checks that
   * both answered the same (rows, counts, or the same kind of failure). Returns the outcome.
   */
  async function both(what: string, guild: string, run: (db: Kysely<DB>) => Promise<unknown>): Promise<unknown> {
    const pods = await outcome(() => run(gateway.db<DB>(guild)));
    const plain = await outcome(() => run(reference));
    assert.deepEqual(pods, plain, `${what} in guild ${guild}: the gateway answered ${JSON.stringify(pods)}, the plain file ${JSON.stringify(plain)}`);
    return pods;
  }

  before(async () => {
    started = Date.now();
    // The pods' message_cache expiry stays out of the way (the test writes old timestamps).
    deployment = await startDeployment({ pods: PODS, prefix: "gg-kysely-test-", env: { CACHE_EXPIRY_INTERVAL_SECS: "3600" } });
    gateway = new GatewayClient(deployment.options());

    file = new Database(path.join(deployment.dir, "reference.sqlite3"));
    file.exec(SCHEMA);
    reference = new Kysely<DB>({ dialect: new SqliteDialect({ database: file }) });
    columns = Object.fromEntries(
      BOT_TABLES.map((t) => [t, (file.prepare(`select name from pragma_table_info(?)`).all(t) as { name: string }[]).map((r) => r.name)]),
    );

    for (const guild of GUILDS) {
      const known = await gateway.query(guild, {
        sql: 'select "channel_id" from "guild_channels" where "guild_id" = ? order by "channel_id"',
        parameters: [guild],
      });
      channels.set(guild, known.rows.map((r) => String(r[0])));
      tickets.set(guild, []);
    }
    // The pods know the sample's channels, each in its guild.
    for (const guild of GUILDS) {
      assert.deepEqual(channels.get(guild), expected.channel_info.filter((c) => c.guild_id === guild).map((c) => c.id).sort(), guild);
    }

    // The plain file starts with the pods' rows of the bot's tables.
    for (const table of BOT_TABLES) {
      const list = columns[table]!;
      const insert = file.prepare(`insert into "${table}" (${list.map((c) => `"${c}"`).join(", ")}) values (${list.map(() => "?").join(", ")})`);
      for (const guild of GUILDS) {
        for (const line of await rowsOf(gateway.db(guild), table, guild)) {
          const row = JSON.parse(line) as Record<string, unknown>;
          insert.run(list.map((c) => row[c] ?? null));
        }
      }
    }
  });

  after(async () => {
    await reference?.destroy();
    await deployment?.stop();
  });

  test("both sides start with the pods' rows of the sample", async () => {
    for (const table of BOT_TABLES) await compareTable(table);
    const count = file.prepare("select count(*) as n from message_stats").get() as { n: number };
    assert.equal(count.n, expected.message_stats.length);
  });

  test("guilds: registerGuild (twice), setSettings, fetchSettings", async () => {
    for (const [i, guild] of GUILDS.entries()) {
      const chans = channels.get(guild)!;
      // The pods already have the guild's row (GUILD_CREATE), and so has the plain file's copy.
      await both("registerGuild", guild, (db) => bot.registerGuild(db, guild));
      const again = await both("registerGuild again", guild, (db) => bot.registerGuild(db, guild));
      assert.deepEqual(again, { ok: [{ inserted: "0" }] });
      await both("setSettings", guild, (db) =>
        bot.setSettings(db, guild, { modLog: chans[0], moderator: snow(i, 1), quorum: 3, deletionLog: chans[1] }),
      );
      await both("setSettings", guild, (db) => bot.setSettings(db, guild, { restricted: snow(i, 2) }));
      const settings = await both("fetchSettings", guild, (db) => bot.fetchSettings(db, guild, ["modLog", "moderator", "quorum", "restricted"]));
      assert.deepEqual(settings, { ok: [{ modLog: chans[0], moderator: snow(i, 1), quorum: 3, restricted: snow(i, 2) }] });
    }
    await compareTable("guilds");
  });

  test("guild_subscriptions: initializeFreeSubscription, createOrUpdateSubscription, updateSubscriptionStatus", async () => {
    for (const [i, guild] of GUILDS.entries()) {
      const existing = await both("getGuildSubscription", guild, (db) => bot.getGuildSubscription(db, guild));
      assert.deepEqual(existing, { ok: [] });
      await both("initializeFreeSubscription", guild, (db) =>
        bot.createOrUpdateSubscription(db, { guild_id: guild, product_tier: "free" }, at(10)),
      );
      await both("createOrUpdateSubscription (upgrade)", guild, (db) =>
        bot.createOrUpdateSubscription(
          db,
          { guild_id: guild, stripe_customer_id: `cus_${i}`, stripe_subscription_id: `sub_${i}`, product_tier: "paid", current_period_end: at(86_400) },
          at(11),
        ),
      );
      await both("updateSubscriptionStatus", guild, (db) =>
        i % 2 === 0 ? bot.updateSubscriptionStatus(db, guild, "past_due", at(12), at(90_000)) : bot.updateSubscriptionStatus(db, guild, "canceled", at(12)),
      );
      await both("getGuildSubscription", guild, (db) => bot.getGuildSubscription(db, guild));
    }
    await compareTable("guild_subscriptions");
  });

  test("reported_messages: recordReport (a duplicate is a constraint violation on both), markMessageAsDeleted, deleteReport", async () => {
    for (const [i, guild] of GUILDS.entries()) {
      const chans = channels.get(guild)!;
      const report = (k: number, reason: string, reportedUserId: string, staff: boolean): bot.ReportData => ({
        reportedMessageId: snow(i, 100 + k),
        reportedChannelId: chans[0]!,
        reportedUserId,
        guildId: guild,
        logMessageId: snow(i, 200 + k),
        logChannelId: chans[1]!,
        reason,
        ...(staff ? { staffId: user(10 + i), staffUsername: `mod-${i}` } : {}),
        ...(k % 2 === 0 ? { extra: `note ${k}` } : {}),
      });
      const reports = [
        report(0, "anonReport", user(1), false),
        report(1, "track", user(1), true),
        report(2, "modResolution", user(2), true),
        report(3, "automod", user(1), false),
      ];
      if (spamGuilds().includes(guild)) reports.push(report(4, "spam", SPAMMER, false));
      for (const [k, data] of reports.entries()) {
        await both(`recordReport ${data.reason}`, guild, (db) => bot.recordReport(db, uuid(1, i, k), data, at(20 + k)));
      }
      // Same message, reason and guild: idx_unique_message_reason_guild.
      const duplicate = await both("recordReport again", guild, (db) => bot.recordReport(db, uuid(1, i, 99), reports[0]!, at(29)));
      assert.deepEqual(duplicate, { error: "constraint" });
      await both("markMessageAsDeleted", guild, (db) => bot.markMessageAsDeleted(db, snow(i, 100), guild, at(30)));
      await both("markMessageAsDeleted again", guild, (db) => bot.markMessageAsDeleted(db, snow(i, 100), guild, at(31)));
      await both("deleteReport", guild, (db) => bot.deleteReport(db, uuid(1, i, 3)));
      await both("getReportsForMessage", guild, (db) => bot.getReportsForMessage(db, snow(i, 101), guild));
      await both("getUserReportSummary's reasons", guild, (db) => bot.getUserReportReasons(db, user(1), guild));
    }
    await compareTable("reported_messages");
  });

  test("escalations and escalation_records: createEscalation, votes (toggled), strategy, schedule, resolve", async () => {
    for (const [i, guild] of GUILDS.entries()) {
      const escalation = (k: number, votingStrategy: string | undefined): bot.EscalationData => ({
        id: uuid(2, i, k),
        guildId: guild,
        threadId: snow(i, 300 + k),
        voteMessageId: snow(i, 310 + k),
        reportedUserId: user(1),
        initiatorId: user(10 + i),
        quorum: 3,
        votingStrategy,
      });
      const created = await both("createEscalation", guild, (db) => bot.createEscalation(db, escalation(0, "simple"), at(40)));
      assert.ok((created as { ok: unknown }).ok, JSON.stringify(created));
      await both("createEscalation", guild, (db) => bot.createEscalation(db, escalation(1, undefined), at(41)));
      const e0 = uuid(2, i, 0);
      await both("recordVote", guild, (db) => bot.recordVote(db, uuid(3, i, 0), { escalationId: e0, voterId: user(20), vote: "ban" }));
      await both("recordVote", guild, (db) => bot.recordVote(db, uuid(3, i, 1), { escalationId: e0, voterId: user(21), vote: "kick" }));
      const toggled = await both("recordVote (same vote: removed)", guild, (db) =>
        bot.recordVote(db, uuid(3, i, 2), { escalationId: e0, voterId: user(20), vote: "ban" }),
      );
      assert.deepEqual(toggled, { ok: { isNew: false } });
      await both("recordVote", guild, (db) => bot.recordVote(db, uuid(3, i, 3), { escalationId: e0, voterId: user(20), vote: "track" }));
      await both("updateEscalationStrategy", guild, (db) => bot.updateEscalationStrategy(db, e0, "majority"));
      await both("updateScheduledFor", guild, (db) => bot.updateScheduledFor(db, e0, bot.calculateScheduledFor(at(40), 2)));
      await both("resolveEscalation", guild, (db) => bot.resolveEscalation(db, uuid(2, i, 1), "ban", at(50)));
      await both("resolveEscalation again", guild, (db) => bot.resolveEscalation(db, uuid(2, i, 1), "kick", at(51)));
      await both("getVotesForEscalation", guild, (db) => bot.getVotesForEscalation(db, e0));
    }
    // The bot's scheduler reads every guild's due escalations at once: on the pods, that is a
    // read across guilds (rows in no particular order across pods).
    const due = (rows: { id: string }[]) => rows.map((r) => JSON.stringify(r)).sort();
    const now = at(40 + 30 * 3600);
    const dueOnPods = due(await bot.getDueEscalations(gateway.crossGuildDb<DB>(GUILDS), now));
    assert.deepEqual(dueOnPods, due(await bot.getDueEscalations(reference, now)));
    assert.equal(dueOnPods.length, GUILDS.length);
    await compareTable("escalations");
    await compareTable("escalation_records");
  });

  test("honeypot_config and reactji_channeler_config: the setup commands, repeated", async () => {
    for (const [i, guild] of GUILDS.entries()) {
      const chans = channels.get(guild)!;
      assert.deepEqual(await both("setupHoneypot", guild, (db) => bot.setupHoneypot(db, guild, chans[2]!)), { ok: [{ inserted: "1" }] });
      // The command sends its message only when a row was inserted: numInsertedOrUpdatedRows.
      assert.deepEqual(await both("setupHoneypot again", guild, (db) => bot.setupHoneypot(db, guild, chans[2]!)), { ok: [{ inserted: "0" }] });
      await both("setupAll's honeypot", guild, (db) => bot.setupHoneypot(db, guild, chans[3]!));

      const reactji = (channelId: string, emoji: string, threshold: number) => ({
        guildId: guild,
        channelId,
        emoji,
        configuredById: user(10 + i),
        threshold,
      });
      await both("setupReactjiChannel", guild, (db) => bot.setupReactjiChannel(db, uuid(4, i, 0), reactji(chans[0]!, "⭐", 3)));
      await both("setupReactjiChannel (same emoji: updated)", guild, (db) => bot.setupReactjiChannel(db, uuid(4, i, 1), reactji(chans[1]!, "⭐", 5)));
      await both("setupReactjiChannel", guild, (db) => bot.setupReactjiChannel(db, uuid(4, i, 2), reactji(chans[0]!, "<:party:123456789012345678>", 1)));
    }
    await compareTable("honeypot_config");
    await compareTable("reactji_channeler_config");
  });

  test("user_threads and deletion_log_threads: the upserts", async () => {
    for (const [i, guild] of GUILDS.entries()) {
      await both("upsertUserThread", guild, (db) => bot.upsertUserThread(db, user(1), guild, snow(i, 400), at(60)));
      await both("upsertUserThread (same user: new thread)", guild, (db) => bot.upsertUserThread(db, user(1), guild, snow(i, 401), at(61)));
      await both("upsertUserThread", guild, (db) => bot.upsertUserThread(db, user(2), guild, snow(i, 402), at(62)));
      await both("getUserThread", guild, (db) => bot.getUserThread(db, user(1), guild));
      await both("upsertDeletionLogThread", guild, (db) => bot.upsertDeletionLogThread(db, user(1), guild, snow(i, 410)));
      await both("upsertDeletionLogThread (same user)", guild, (db) => bot.upsertDeletionLogThread(db, user(1), guild, snow(i, 411)));
      await both("upsertDeletionLogThread", guild, (db) => bot.upsertDeletionLogThread(db, user(2), guild, snow(i, 412)));
    }
    await compareTable("user_threads");
    await compareTable("deletion_log_threads");
  });

  test("tickets_config: setupTickets, setupAll, and the button handler's RETURNING insert", async () => {
    for (const [i, guild] of GUILDS.entries()) {
      const chans = channels.get(guild)!;
      const ids = [snow(i, 500), snow(i, 501), snow(i, 502)];
      tickets.get(guild)!.push(...ids);
      await both("setupTickets", guild, (db) => bot.setupTickets(db, ids[0]!, chans[0], snow(i, 1)));
      await both("setupAll's tickets", guild, (db) => bot.setupTickets(db, ids[1]!, chans[chans.length - 1], snow(i, 1)));
      await both("setupTickets again (same message)", guild, (db) => bot.setupTickets(db, ids[1]!, chans[0], snow(i, 1)));
      // The button handler's fallback names no channel, so nothing in its row says whose it is:
      // the owner refuses it. Given the channel the button is in, it passes.
      const unscoped = await outcome(() => bot.fixMissingTicketsConfig(gateway.db<DB>(guild), ids[2]!, snow(i, 1)));
      assert.deepEqual(unscoped, {
        error: `gateway 403: the statement touched a row of the table tickets_config that is not guild ${guild}'s; it was rolled back`,
      });
      const fixed = await both("the button handler's fix, with the button's channel", guild, (db) =>
        db.insertInto("tickets_config").returningAll().values({ message_id: ids[2]!, channel_id: chans[1]!, role_id: snow(i, 1) }).execute(),
      );
      assert.deepEqual(fixed, { ok: [{ message_id: ids[2], channel_id: chans[1], role_id: snow(i, 1) }] });
      await both("getTicketsConfig", guild, (db) => bot.getTicketsConfig(db, ids[0]!));
    }
    await compareTable("tickets_config");
  });

  test("mod_actions: recordModAction", async () => {
    for (const [i, guild] of GUILDS.entries()) {
      const actions: bot.ModActionData[] = [
        { userId: user(1), guildId: guild, actionType: "ban", executorId: user(10 + i), executorUsername: `mod-${i}`, reason: "spam" },
        { userId: user(1), guildId: guild, actionType: "unban", executorId: user(10 + i), executorUsername: null },
        { userId: user(2), guildId: guild, actionType: "timeout", executorId: user(10 + i), reason: "cool down", duration: "10m" },
        { userId: user(2), guildId: guild, actionType: "kick" },
      ];
      for (const [k, data] of actions.entries()) {
        await both(`recordModAction ${data.actionType}`, guild, (db) => bot.recordModAction(db, uuid(5, i, k), data, at(70 + k)));
      }
      await both("getModActionCounts", guild, (db) => bot.getModActionCounts(db, user(1), guild));
    }
    await compareTable("mod_actions");
  });

  test("message_stats: a new message, an edit, reactions added and removed, a deletion", async () => {
    for (const [i, guild] of GUILDS.entries()) {
      const chans = channels.get(guild)!;
      const sample = expected.message_stats.filter((r) => r.guild_id === guild).map((r) => r.message_id).sort();
      const info = (k: number): bot.MessageInfo => ({
        char_count: 10 + k,
        word_count: 2 + k,
        code_stats: k % 2 ? [{ chars: 5, words: 1, lines: 1, lang: "ts" }] : [],
        link_stats: k % 3 ? ["https://example.com/x"] : [],
        react_count: 0,
        sent_at: T0 + k * 1000,
      });
      await both("trackMessage", guild, (db) =>
        bot.trackMessage(db, info(1), { id: snow(i, 600), authorId: user(1), guildId: guild, channelId: chans[0]! }, null),
      );
      await both("trackMessage (a reply, in a category)", guild, (db) =>
        bot.trackMessage(db, info(2), { id: snow(i, 601), authorId: user(2), guildId: guild, channelId: chans[1]!, repliedUserId: user(1) }, "category"),
      );
      await both("trackMessage again (same id)", guild, (db) =>
        bot.trackMessage(db, info(2), { id: snow(i, 601), authorId: user(2), guildId: guild, channelId: chans[1]! }, null),
      );
      await both("updateMessageStats (the sample's message)", guild, (db) => bot.updateMessageStats(db, sample[0]!, info(3)));
      await both("updateMessageStats (a new one)", guild, (db) => bot.updateMessageStats(db, snow(i, 600), info(4)));
      for (const id of [sample[0]!, sample[1]!, snow(i, 600), snow(i, 600)]) {
        await both("reaction added", guild, (db) => bot.reactionAdded(db, id));
      }
      await both("reaction removed", guild, (db) => bot.reactionRemoved(db, sample[1]!));
      await both("message deleted (the sample's)", guild, (db) => bot.deleteMessageStats(db, sample[2]!));
      await both("message deleted (unknown)", guild, (db) => bot.deleteMessageStats(db, snow(i, 699)));
    }
    await compareTable("message_stats");
  });

  test("message_cache: upserts, touches, and the expiry limited to the guild", async () => {
    for (const [i, guild] of GUILDS.entries()) {
      const chans = channels.get(guild)!;
      const cached = (k: number, content: string | null) => ({ messageId: snow(i, 700 + k), guildId: guild, channelId: chans[0]!, userId: user(1), content });
      await both("upsertMessage", guild, (db) => bot.upsertMessage(db, cached(0, "first"), at(80)));
      await both("upsertMessage (edited)", guild, (db) => bot.upsertMessage(db, cached(0, "first, edited"), at(81)));
      await both("upsertMessage", guild, (db) => bot.upsertMessage(db, cached(1, "second"), at(82)));
      await both("upsertMessage", guild, (db) => bot.upsertMessage(db, cached(2, null), at(83)));
      await both("touchMessage", guild, (db) => bot.touchMessage(db, snow(i, 701), "second, touched", at(84)));
      const sample = expected.message_cache.filter((r) => r.guild_id === guild).map((r) => r.message_id).sort();
      await both("touchMessage (the sample's)", guild, (db) => bot.touchMessage(db, sample[0]!, "touched", at(85)));
      await both("getMessage", guild, (db) => bot.getCachedMessage(db, snow(i, 700)));
      // Content untouched since before at(84) goes; rows created before at(82) go.
      await both("expireContent, this guild's", guild, (db) => bot.expireGuildContent(db, guild, at(84)));
      await both("expireRows, this guild's", guild, (db) => bot.expireGuildRows(db, guild, at(82)));
    }
    await compareTable("message_cache");
  });

  test("channel_info: getOrFetchChannel's insert of a channel it has not seen; a seen one is a conflict", async () => {
    for (const [i, guild] of GUILDS.entries()) {
      const chans = channels.get(guild)!;
      const unseen = chans[chans.length - 1]!;
      // The pods fill channel_info from Discord's events, so the bot would find every channel
      // there; to replay its insert, one channel's row is removed first (on both sides).
      await both("remove one channel_info row", guild, (db) => db.deleteFrom("channel_info").where("id", "=", unseen).execute());
      assert.deepEqual(await both("getOrFetchChannel's read", guild, (db) => bot.getChannelInfo(db, unseen)), { ok: [] });
      await both("getOrFetchChannel's insert", guild, (db) => bot.cacheChannelInfo(db, unseen, `fetched-${i}`, i % 2 ? "a category" : undefined));
      const seen = await both("insert of a channel already there", guild, (db) => bot.cacheChannelInfo(db, chans[0]!, "again", undefined));
      assert.deepEqual(seen, { error: "constraint" });
      await both("getOrFetchChannel's read", guild, (db) => bot.getChannelInfo(db, unseen));
    }
    await compareTable("channel_info");
  });

  test("export-data's deletion of one guild's data", async () => {
    // A guild of pod 1 that had no spam report: the refusals below use pod 0's two guilds.
    const guild = GUILDS[3]!;
    assert.equal(ownerOrdinal(guild, { pods: PODS }), 1);
    const result = await both("deleteGuildData", guild, (db) => bot.deleteGuildData(db, guild, at(90)));
    assert.deepEqual(result, {
      ok: [
        // Four reports, one of them deleted.
        [{ updated: "3" }],
        [{ deleted: String(expected.message_stats.filter((r) => r.guild_id === guild).length + 1) }],
        [{ deleted: "1" }],
        [{ deleted: "1" }],
      ],
    });
  });

  test("every bot table, every guild: the pods hold exactly the plain file's rows", async () => {
    for (const table of BOT_TABLES) await compareTable(table);
  });

  test("the bot's getSpamReportGuildCount through the cross-guild handle, over guilds of all 3 pods", async () => {
    const spam = spamGuilds();
    assert.equal(new Set(spam.map((g) => ownerOrdinal(g, { pods: PODS }))).size, PODS);
    const cross = gateway.crossGuildDb<DB>(GUILDS);

    // The plain file: one row with the number of guilds.
    assert.deepEqual(await bot.spamReportGuildCount(reference, SPAMMER), [{ count: spam.length }]);
    // The pods: the statement runs unchanged on each owner, so an aggregate comes back once per
    // pod; each pod's distinct guilds are its own, so the sum is the number of guilds.
    const perPod = await bot.spamReportGuildCount(cross, SPAMMER);
    assert.equal(perPod.length, PODS);
    assert.equal(perPod.reduce((sum, row) => sum + Number(row.count), 0), spam.length);
    // Grouped by guild_id, as the README asks of aggregates across guilds: one row per guild.
    const grouped = await cross
      .selectFrom("reported_messages")
      .select("guild_id")
      .where("reported_user_id", "=", SPAMMER)
      .where("reason", "=", "spam")
      .groupBy("guild_id")
      .execute();
    assert.deepEqual(grouped.map((r) => r.guild_id).sort(), [...spam].sort());
    // Limited to guilds of one pod, the bot's statement is one row, as on the plain file.
    const onePod = spam.filter((g) => ownerOrdinal(g, { pods: PODS }) === ownerOrdinal(spam[0]!, { pods: PODS }));
    const single = await bot.spamReportGuildCount(gateway.crossGuildDb<DB>(onePod), SPAMMER);
    assert.deepEqual(single, [{ count: onePod.length }]);
  });

  describe("refusals", () => {
    // Two guilds of pod 0: a statement through one's handle can reach the other's rows.
    const pod0 = () => GUILDS.filter((g) => ownerOrdinal(g, { pods: PODS }) === 0);

    async function refused(run: Promise<unknown>, status: number, pattern: RegExp): Promise<GatewayError> {
      try {
        await run;
      } catch (e) {
        assert.ok(e instanceof GatewayError, `not a GatewayError: ${String(e)}`);
        assert.equal(e.status, status, e.message);
        assert.match(e.error, pattern);
        return e;
      }
      assert.fail(`expected a ${status}`);
    }

    test("a write that reaches another guild's rows in WHERE is a 403 naming the table, and changes nothing", async () => {
      const [mine, other] = pod0();
      assert.ok(mine && other, "two guilds on pod 0");
      const before = await rowsOf(gateway.db(other), "reported_messages", other);
      assert.ok(before.length > 0);
      const e = await refused(
        gateway.db<DB>(mine).updateTable("reported_messages").set({ deleted_at: at(95) }).where("guild_id", "=", other).execute(),
        403,
        /reported_messages/,
      );
      assert.equal((e.body as { table?: unknown }).table, "reported_messages");
      assert.deepEqual(await rowsOf(gateway.db(other), "reported_messages", other), before);

      // The bot's own activityTracker statements find a message by its id alone.
      const theirs = expected.message_stats.filter((r) => r.guild_id === other).map((r) => r.message_id).sort()[5]!;
      assert.equal((await bot.getReactCount(gateway.db<DB>(other), theirs)).length, 1);
      await refused(bot.reactionAdded(gateway.db<DB>(mine), theirs), 403, /message_stats/);
      await refused(bot.deleteMessageStats(gateway.db<DB>(mine), theirs), 403, /message_stats/);
    });

    test("a write of another guild's row in VALUES is a 403 naming the table", async () => {
      const [mine, other] = [GUILDS[0]!, GUILDS[1]!];
      await refused(
        bot.recordReport(gateway.db<DB>(mine), uuid(9, 0, 0), {
          reportedMessageId: snow(9, 0), reportedChannelId: snow(9, 1), reportedUserId: user(1), guildId: other,
          logMessageId: snow(9, 2), logChannelId: snow(9, 3), reason: "track",
        }, at(96)),
        403,
        /reported_messages/,
      );
      await refused(bot.upsertUserThread(gateway.db<DB>(mine), user(1), other, snow(9, 4), at(96)), 403, /user_threads/);
      // A channel of another guild (through guild_channels).
      await refused(bot.setupTickets(gateway.db<DB>(mine), snow(9, 5), channels.get(other)![0], snow(9, 6)), 403, /tickets_config/);
      // A vote on another guild's escalation (through escalations).
      await refused(
        bot.recordVote(gateway.db<DB>(mine), uuid(9, 0, 1), { escalationId: uuid(2, 1, 0), voterId: user(30), vote: "ban" }),
        403,
        /escalation_records/,
      );
    });

    test("the bot's unscoped message_cache expiry through one guild's handle is a 403 and is rolled back whole", async () => {
      const [mine, other] = pod0();
      const old = (guild: string, k: number) => ({ messageId: snow(8, k), guildId: guild, channelId: channels.get(guild)![0]!, userId: user(1), content: "old" });
      await bot.upsertMessage(gateway.db<DB>(mine!), old(mine!, 0), at(1));
      await bot.upsertMessage(gateway.db<DB>(other!), old(other!, 1), at(1));
      await refused(bot.expireRows(gateway.db<DB>(mine!), at(2)), 403, /message_cache/);
      await refused(bot.expireContent(gateway.db<DB>(mine!), at(2)), 403, /message_cache/);
      for (const [guild, k] of [[mine!, 0], [other!, 1]] as const) {
        assert.deepEqual(
          (await bot.getCachedMessage(gateway.db<DB>(guild), snow(8, k))).map((r) => r.content),
          ["old"],
        );
      }
      // Limited to the guild, it passes.
      assert.deepEqual(await bot.expireGuildRows(gateway.db<DB>(mine!), mine!, at(2)), [new DeleteResult(1n)]);
    });

    test("a table that is not a guild's: 403 for the gateway's own; the web tier's users is not on the pods", async () => {
      const db = gateway.db<any>(GUILDS[0]!);
      await refused(db.insertInto("gateway_ownership").values({ id: 2, epoch: 1, pods: 1, strategy: "md5", shards: 1 }).execute(), 403, /gateway_ownership/);
      await refused(db.updateTable("guild_channels").set({ guild_id: GUILDS[0] }).where("channel_id", "=", channels.get(GUILDS[1]!)![0]).execute(), 403, /guild_channels/);
      // The web tier's users table is not on the pods at all: SQLite's "no such table" (400),
      // unless the registry is asked first (403).
      await assert.rejects(db.insertInto("users").values({ id: uuid(9, 9, 9), externalId: "x" }).execute(), (e: unknown) => {
        assert.ok(e instanceof GatewayError);
        assert.ok(e.status === 400 || e.status === 403, e.message);
        assert.match(e.error, e.status === 400 ? /no such table: users/ : /users/);
        return true;
      });
    });

    test("DDL, PRAGMA, two statements, a SELECT sent as a write: 400", async () => {
      const guild = GUILDS[0]!;
      const db = gateway.db<DB>(guild);
      await refused(sql`create table t (a text)`.execute(db), 400, /./);
      await refused(db.schema.dropTable("message_cache").execute(), 400, /./);
      await refused(sql`pragma user_version = 3`.execute(db), 400, /./);
      await refused(
        sql`insert into honeypot_config (guild_id, channel_id) values (${guild}, '1'); delete from honeypot_config`.execute(db),
        400,
        /./,
      );
      await refused(gateway.execute(guild, { sql: "select 1", parameters: [] }), 400, /./);
      await refused(gateway.execute(guild, { sql: "begin", parameters: [] }), 400, /./);
    });

    test("a transaction is refused by the dialect, before any request", async () => {
      await assert.rejects(
        gateway.db<DB>(GUILDS[0]!).transaction().execute((trx) => bot.setupHoneypot(trx, GUILDS[0]!, snow(9, 9))),
        (e: unknown) => e instanceof GatewayUnsupportedError && /no transactions/.test(e.message),
      );
      assert.deepEqual(await gateway.db<DB>(GUILDS[0]!).selectFrom("honeypot_config").selectAll().where("channel_id", "=", snow(9, 9)).execute(), []);
    });

    test("a write sent to a pod that does not own the guild: 421 naming the owner; the dialect follows it", async () => {
      const guild = GUILDS.find((g) => ownerOrdinal(g, { pods: PODS }) !== 0)!;
      const owner = ownerOrdinal(guild, { pods: PODS });
      const statement = gateway.db<DB>(guild).insertInto("honeypot_config").values({ guild_id: guild, channel_id: snow(9, 10) }).compile();
      const response = await fetch(`${deployment!.pods[0]!.url}/v1/guilds/${guild}/execute`, {
        method: "POST",
        headers: { authorization: `Bearer ${deployment!.token}`, "content-type": "application/json" },
        body: JSON.stringify({ sql: statement.sql, parameters: statement.parameters }),
      });
      assert.equal(response.status, 421);
      const body = (await response.json()) as { ordinal: number; url: string };
      assert.equal(body.ordinal, owner);
      assert.equal(body.url, deployment!.pods[owner]!.url);

      // A client that believes there is one pod sends everything to pod 0 and follows the 421.
      const stale = new GatewayClient(deployment!.options({ pods: 1 }));
      const [inserted] = await bot.setupHoneypot(stale.db<DB>(guild), guild, snow(9, 10));
      assert.equal(inserted?.numInsertedOrUpdatedRows, 1n);
      const rows = await gateway.db<DB>(guild).selectFrom("honeypot_config").select("guild_id").where("channel_id", "=", snow(9, 10)).execute();
      assert.deepEqual(rows, [{ guild_id: guild }]);
    });

    test("a constraint violation is a 409 with SQLite's message", async () => {
      const guild = GUILDS[0]!;
      await refused(bot.setupTickets(gateway.db<DB>(guild), snow(0, 500), channels.get(guild)![0], snow(0, 1)), 409, /UNIQUE|PRIMARY|constraint/i);
    });
  });
});
