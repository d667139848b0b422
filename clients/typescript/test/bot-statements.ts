// Every write the bot (reactiflux/mod-bot) makes to its guild tables, and the reads around
// them, as the bot builds them with Kysely: the same builder calls, table by table, with the
// source they come from. Only what the bot takes from the world is a parameter here: the
// clock (`now`, where the bot calls new Date().toISOString()), the ids it draws
// (crypto.randomUUID()) and what Discord would tell it. The bot runs these through
// @effect/sql-kysely (`yield* db.insertInto(...)`); here they end in `.execute()`, which is
// what that does underneath.
//
// Left out: the web tier's global tables users and sessions (no guild's), and nothing else.

import type { Kysely } from "kysely";
import type { DB } from "./bot-db.js";

type Db = Kysely<DB>;

// --- guilds (app/models/guilds.server.ts) ---

export const registerGuild = (db: Db, guildId: string) =>
  db
    .insertInto("guilds")
    .values({
      id: guildId,
      settings: JSON.stringify({}),
    })
    .onConflict((oc) => oc.column("id").doNothing())
    .execute();

export const setSettings = (db: Db, guildId: string, settings: Record<string, unknown>) =>
  db
    .updateTable("guilds")
    .set("settings", (eb) => eb.fn("json_patch", ["settings", eb.val(JSON.stringify(settings))]))
    .where("id", "=", guildId)
    .execute();

export const fetchSettings = (db: Db, guildId: string, keys: string[]) =>
  db
    .selectFrom("guilds")
    // The bot's own @ts-expect-error: settings is declared jsonb but typed as text.
    .select((eb: any) => keys.map((k) => eb.ref("settings", "->>").key(k).as(k)))
    .where("id", "=", guildId)
    .execute();

// --- guild_subscriptions (app/models/subscriptions.server.ts) ---

export const getGuildSubscription = (db: Db, guildId: string) =>
  db.selectFrom("guild_subscriptions").selectAll().where("guild_id", "=", guildId).execute();

export interface SubscriptionData {
  guild_id: string;
  stripe_customer_id?: string;
  stripe_subscription_id?: string;
  product_tier: string;
  status?: string;
  current_period_end?: string;
}

export const createOrUpdateSubscription = (db: Db, data: SubscriptionData, now: string) =>
  db
    .insertInto("guild_subscriptions")
    .values({
      guild_id: data.guild_id,
      stripe_customer_id: data.stripe_customer_id ?? null,
      stripe_subscription_id: data.stripe_subscription_id ?? null,
      product_tier: data.product_tier,
      status: data.status ?? "active",
      current_period_end: data.current_period_end ?? null,
      created_at: now,
      updated_at: now,
    })
    .onConflict((oc) =>
      oc.column("guild_id").doUpdateSet({
        stripe_customer_id: data.stripe_customer_id ?? null,
        stripe_subscription_id: data.stripe_subscription_id ?? null,
        product_tier: data.product_tier,
        status: data.status ?? "active",
        current_period_end: data.current_period_end ?? null,
        updated_at: now,
      }),
    )
    .execute();

export const updateSubscriptionStatus = (db: Db, guildId: string, status: string, now: string, currentPeriodEnd?: string) =>
  db
    .updateTable("guild_subscriptions")
    .set({
      status,
      current_period_end: currentPeriodEnd ?? null,
      updated_at: now,
    })
    .where("guild_id", "=", guildId)
    .execute();

// --- reported_messages (app/models/reportedMessages.ts) ---

export interface ReportData {
  reportedMessageId: string;
  reportedChannelId: string;
  reportedUserId: string;
  guildId: string;
  logMessageId: string;
  logChannelId: string;
  reason: string;
  staffId?: string;
  staffUsername?: string;
  extra?: string;
}

export const recordReport = (db: Db, reportId: string, data: ReportData, now: string) =>
  db
    .insertInto("reported_messages")
    .values({
      id: reportId,
      reported_message_id: data.reportedMessageId,
      reported_channel_id: data.reportedChannelId,
      reported_user_id: data.reportedUserId,
      guild_id: data.guildId,
      log_message_id: data.logMessageId,
      log_channel_id: data.logChannelId,
      reason: data.reason,
      staff_id: data.staffId,
      staff_username: data.staffUsername,
      extra: data.extra,
      created_at: now,
    })
    .execute();

export const deleteReport = (db: Db, reportId: string) => db.deleteFrom("reported_messages").where("id", "=", reportId).execute();

export const markMessageAsDeleted = (db: Db, messageId: string, guildId: string, now: string) =>
  db
    .updateTable("reported_messages")
    .set("deleted_at", now)
    .where("reported_message_id", "=", messageId)
    .where("guild_id", "=", guildId)
    .where("deleted_at", "is", null)
    .execute();

export const getReportsForMessage = (db: Db, messageId: string, guildId: string) =>
  db
    .selectFrom("reported_messages")
    .selectAll()
    .where("reported_message_id", "=", messageId)
    .where("guild_id", "=", guildId)
    .where("deleted_at", "is", null)
    .orderBy("created_at", "desc")
    .execute();

export const getUserReportReasons = (db: Db, userId: string, guildId: string) =>
  db
    .selectFrom("reported_messages")
    .select(["reason"])
    .select((eb) => eb.fn.count("id").as("count"))
    .where("reported_user_id", "=", userId)
    .where("guild_id", "=", guildId)
    .groupBy("reason")
    .orderBy("count", "desc")
    .orderBy("reason")
    .execute();

/** getSpamReportGuildCount: the bot's cross-guild read, as it builds it. */
export const spamReportGuildCount = (db: Db, userId: string) =>
  db
    .selectFrom("reported_messages")
    .select(({ fn }) => fn.count("guild_id").distinct().as("count"))
    .where("reported_user_id", "=", userId)
    .where("reason", "=", "spam")
    .execute();

// --- app/routes/export-data.tsx: a guild's data deletion ---

export const deleteGuildData = async (db: Db, guildId: string, now: string) => [
  await db.updateTable("reported_messages").set({ deleted_at: now }).where("guild_id", "=", guildId).execute(),
  await db.deleteFrom("message_stats").where("guild_id", "=", guildId).execute(),
  await db.deleteFrom("guild_subscriptions").where("guild_id", "=", guildId).execute(),
  await db.deleteFrom("guilds").where("id", "=", guildId).execute(),
];

// --- escalations and escalation_records (app/commands/escalate/service.ts) ---

/** app/helpers/escalationVotes.ts */
export function calculateScheduledFor(createdAt: string, voteCount: number): string {
  const timeoutHours = Math.max(0, 36 - 4 * voteCount);
  return new Date(new Date(createdAt).getTime() + timeoutHours * 60 * 60 * 1000).toISOString();
}

export interface EscalationData {
  id: string;
  guildId: string;
  threadId: string;
  voteMessageId: string;
  reportedUserId: string;
  initiatorId: string;
  quorum: number;
  votingStrategy: string | undefined;
}

export const createEscalation = async (db: Db, data: EscalationData, createdAt: string) => {
  const scheduledFor = calculateScheduledFor(createdAt, 0);
  const escalation = {
    id: data.id,
    guild_id: data.guildId,
    thread_id: data.threadId,
    vote_message_id: data.voteMessageId,
    reported_user_id: data.reportedUserId,
    initiator_id: data.initiatorId,
    flags: JSON.stringify({ quorum: data.quorum }),
    voting_strategy: data.votingStrategy,
    created_at: createdAt,
    scheduled_for: scheduledFor,
  };
  await db.insertInto("escalations").values(escalation).execute();
  const [created] = await db.selectFrom("escalations").selectAll().where("id", "=", data.id).execute();
  return created;
};

export const recordVote = async (db: Db, recordId: string, data: { escalationId: string; voterId: string; vote: string }) => {
  const existingVotes = await db
    .selectFrom("escalation_records")
    .selectAll()
    .where("escalation_id", "=", data.escalationId)
    .where("voter_id", "=", data.voterId)
    .execute();
  if (existingVotes.some((v) => v.vote === data.vote)) {
    await db
      .deleteFrom("escalation_records")
      .where("escalation_id", "=", data.escalationId)
      .where("voter_id", "=", data.voterId)
      .where("vote", "=", data.vote)
      .execute();
    return { isNew: false };
  }
  await db
    .insertInto("escalation_records")
    .values({
      id: recordId,
      escalation_id: data.escalationId,
      voter_id: data.voterId,
      vote: data.vote,
    })
    .execute();
  return { isNew: true };
};

export const resolveEscalation = async (db: Db, id: string, resolution: string, now: string) => {
  const [escalation] = await db.selectFrom("escalations").selectAll().where("id", "=", id).execute();
  if (!escalation) throw new Error(`escalation ${id} not found`);
  if (escalation.resolved_at) throw new Error(`escalation ${id} already resolved`);
  await db
    .updateTable("escalations")
    .set({
      resolved_at: now,
      resolution,
    })
    .where("id", "=", id)
    .execute();
};

export const updateEscalationStrategy = (db: Db, id: string, strategy: string) =>
  db.updateTable("escalations").set({ voting_strategy: strategy }).where("id", "=", id).execute();

export const updateScheduledFor = (db: Db, id: string, timestamp: string) =>
  db.updateTable("escalations").set({ scheduled_for: timestamp }).where("id", "=", id).execute();

export const getDueEscalations = (db: Db, now: string) =>
  db.selectFrom("escalations").selectAll().where("resolved_at", "is", null).where("scheduled_for", "<=", now).execute();

export const getVotesForEscalation = (db: Db, escalationId: string) =>
  db.selectFrom("escalation_records").selectAll().where("escalation_id", "=", escalationId).execute();

// --- honeypot_config (app/commands/setupHoneypot.ts; app/helpers/setupAll.server.ts is the same) ---

export const setupHoneypot = (db: Db, guildId: string, channelId: string) =>
  db
    .insertInto("honeypot_config")
    .values({
      guild_id: guildId,
      channel_id: channelId,
    })
    .onConflict((c) => c.doNothing())
    .execute();

// --- reactji_channeler_config (app/commands/setupReactjiChannel.ts) ---

export const setupReactjiChannel = (
  db: Db,
  id: string,
  data: { guildId: string; channelId: string; emoji: string; configuredById: string; threshold: number },
) =>
  db
    .insertInto("reactji_channeler_config")
    .values({
      id,
      guild_id: data.guildId,
      channel_id: data.channelId,
      emoji: data.emoji,
      configured_by_id: data.configuredById,
      threshold: data.threshold,
    })
    .onConflict((oc) =>
      oc.columns(["guild_id", "emoji"]).doUpdateSet({
        channel_id: data.channelId,
        configured_by_id: data.configuredById,
        threshold: data.threshold,
      }),
    )
    .execute();

// --- user_threads (app/models/userThreads.ts) ---

export const upsertUserThread = (db: Db, userId: string, guildId: string, threadId: string, now: string) =>
  db
    .insertInto("user_threads")
    .values({
      user_id: userId,
      guild_id: guildId,
      thread_id: threadId,
      created_at: now,
    })
    .onConflict((oc) => oc.columns(["user_id", "guild_id"]).doUpdateSet({ thread_id: threadId }))
    .execute();

export const getUserThread = (db: Db, userId: string, guildId: string) =>
  db.selectFrom("user_threads").selectAll().where("user_id", "=", userId).where("guild_id", "=", guildId).execute();

// --- deletion_log_threads (app/models/deletionLogThreads.ts): no created_at, the column's default ---

export const upsertDeletionLogThread = (db: Db, userId: string, guildId: string, threadId: string) =>
  db
    .insertInto("deletion_log_threads")
    .values({
      user_id: userId,
      guild_id: guildId,
      thread_id: threadId,
    })
    .onConflict((oc) => oc.columns(["user_id", "guild_id"]).doUpdateSet({ thread_id: threadId }))
    .execute();

// --- tickets_config (app/commands/setupTickets.ts, app/helpers/setupAll.server.ts) ---

/** setupTickets' command and setupAll: the button's message, its channel, the role to ping. */
export const setupTickets = (db: Db, messageId: string, channelId: string | undefined, roleId: string) =>
  db
    .insertInto("tickets_config")
    .values({
      message_id: messageId,
      channel_id: channelId,
      role_id: roleId,
    })
    .execute();

/** setupTickets' button handler, for a button made before the table: no channel, RETURNING. */
export const fixMissingTicketsConfig = (db: Db, messageId: string, roleId: string) =>
  db.insertInto("tickets_config").returningAll().values({ message_id: messageId, role_id: roleId }).execute();

export const getTicketsConfig = (db: Db, messageId: string) =>
  db.selectFrom("tickets_config").selectAll().where("message_id", "=", messageId).execute();

// --- mod_actions (app/models/modActions.ts) ---

export interface ModActionData {
  userId: string;
  guildId: string;
  actionType: string;
  executorId?: string;
  executorUsername?: string | null;
  reason?: string | null;
  duration?: string;
}

export const recordModAction = (db: Db, id: string, data: ModActionData, now: string) =>
  db
    .insertInto("mod_actions")
    .values({
      id,
      user_id: data.userId,
      guild_id: data.guildId,
      action_type: data.actionType,
      executor_id: data.executorId ?? null,
      executor_username: data.executorUsername ?? null,
      reason: data.reason ?? null,
      duration: data.duration ?? null,
      created_at: now,
    })
    .execute();

export const getModActionCounts = (db: Db, userId: string, guildId: string) =>
  db
    .selectFrom("mod_actions")
    .select(["action_type"])
    .select((eb) => eb.fn.count("id").as("count"))
    .where("user_id", "=", userId)
    .where("guild_id", "=", guildId)
    .groupBy("action_type")
    .orderBy("action_type")
    .execute();

// --- message_stats (app/discord/activityTracker.ts) ---

/** What getMessageStats (app/helpers/discord.ts) computes from a message. */
export interface MessageInfo {
  char_count: number;
  word_count: number;
  code_stats: unknown[];
  link_stats: string[];
  react_count: number;
  sent_at: number;
}

export const trackMessage = (
  db: Db,
  info: MessageInfo,
  msg: { id: string; authorId: string; guildId: string; channelId: string; repliedUserId?: string },
  channelCategory: string | null,
) =>
  db
    .insertInto("message_stats")
    .values({
      ...info,
      code_stats: JSON.stringify(info.code_stats),
      link_stats: JSON.stringify(info.link_stats),
      message_id: msg.id,
      author_id: msg.authorId,
      guild_id: msg.guildId,
      channel_id: msg.channelId,
      recipient_id: msg.repliedUserId ?? null,
      channel_category: channelCategory,
    })
    .execute();

export const updateMessageStats = (db: Db, messageId: string, info: MessageInfo) =>
  db
    .updateTable("message_stats")
    .where("message_id", "=", messageId)
    .set({
      ...info,
      code_stats: JSON.stringify(info.code_stats),
      link_stats: JSON.stringify(info.link_stats),
    })
    .execute();

export const getReactCount = (db: Db, messageId: string) =>
  db.selectFrom("message_stats").select("react_count").where("message_id", "=", messageId).execute();

export const deleteMessageStats = (db: Db, messageId: string) =>
  db.deleteFrom("message_stats").where("message_id", "=", messageId).execute();

export const reactionAdded = (db: Db, messageId: string) =>
  db
    .updateTable("message_stats")
    .where("message_id", "=", messageId)
    .set({ react_count: (eb) => eb(eb.ref("react_count"), "+", 1) })
    .execute();

export const reactionRemoved = (db: Db, messageId: string) =>
  db
    .updateTable("message_stats")
    .where("message_id", "=", messageId)
    .set({ react_count: (eb) => eb(eb.ref("react_count"), "-", 1) })
    .execute();

// --- message_cache (app/discord/messageCacheService.ts) ---

export const upsertMessage = (
  db: Db,
  data: { messageId: string; guildId: string; channelId: string; userId: string; content: string | null },
  now: string,
) =>
  db
    .insertInto("message_cache")
    .values({
      message_id: data.messageId,
      guild_id: data.guildId,
      channel_id: data.channelId,
      user_id: data.userId,
      content: data.content,
      last_touched: now,
      created_at: now,
    })
    .onConflict((oc) => oc.column("message_id").doUpdateSet({ content: data.content, last_touched: now }))
    .execute();

export const touchMessage = (db: Db, messageId: string, content: string | null, now: string) =>
  db.updateTable("message_cache").set({ last_touched: now, content }).where("message_id", "=", messageId).execute();

export const getCachedMessage = (db: Db, messageId: string) =>
  db.selectFrom("message_cache").selectAll().where("message_id", "=", messageId).execute();

/**
 * expireContent as the bot writes it: every guild's rows (its process holds them all). Through
 * a guild's handle it touches the other guilds of that pod too, and the pod refuses it; the
 * pods expire message_cache themselves (CACHE_CONTENT_TTL_MINUTES, CACHE_RETENTION_HOURS).
 */
export const expireContent = (db: Db, cutoff: string) =>
  db.updateTable("message_cache").set({ content: null }).where("content", "is not", null).where("last_touched", "<", cutoff).execute();

/** expireRows as the bot writes it (see expireContent). */
export const expireRows = (db: Db, cutoff: string) => db.deleteFrom("message_cache").where("created_at", "<", cutoff).execute();

/** expireContent limited to one guild: what a per-guild caller of the gateway would send. */
export const expireGuildContent = (db: Db, guildId: string, cutoff: string) =>
  db
    .updateTable("message_cache")
    .set({ content: null })
    .where("guild_id", "=", guildId)
    .where("content", "is not", null)
    .where("last_touched", "<", cutoff)
    .execute();

/** expireRows limited to one guild. */
export const expireGuildRows = (db: Db, guildId: string, cutoff: string) =>
  db.deleteFrom("message_cache").where("guild_id", "=", guildId).where("created_at", "<", cutoff).execute();

// --- channel_info (app/discord/utils.ts getOrFetchChannel) ---

export const getChannelInfo = (db: Db, channelId: string) =>
  db.selectFrom("channel_info").selectAll().where("id", "=", channelId).execute();

export const cacheChannelInfo = (db: Db, channelId: string, name: string, parentName: string | undefined) =>
  db
    .insertInto("channel_info")
    .values({
      id: channelId,
      name,
      category: parentName ?? null,
    })
    .execute();
