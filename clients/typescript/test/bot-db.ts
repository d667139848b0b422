// The bot's guild tables as Kysely types, written from reactiflux/mod-bot's migrations (the
// same shapes kysely-codegen gives its app/db.d.ts): a column without NOT NULL is nullable (a
// non-integer PRIMARY KEY included, as SQLite allows), and one with a default is Generated
// (optional on insert). The web tier's global tables (users, sessions) are left out: they
// are not a guild's, and the gateway does not hold them.

import type { ColumnType } from "kysely";

export type Generated<T> =
  T extends ColumnType<infer S, infer I, infer U> ? ColumnType<S, I | undefined, U> : ColumnType<T, T | undefined, T>;

/** 20220526193702_guilds: `id serial primary key, settings jsonb`. */
export interface Guilds {
  id: string | null;
  settings: string | null;
}

/** 20250628100531_guild_subscriptions. */
export interface GuildSubscriptions {
  guild_id: string | null;
  stripe_customer_id: string | null;
  stripe_subscription_id: string | null;
  product_tier: Generated<string>;
  status: Generated<string>;
  current_period_end: string | null;
  created_at: Generated<string | null>;
  updated_at: Generated<string | null>;
}

/** 20250726155346_reported_messages, its unique index (20250726201405) and deleted_at (20250726215517). */
export interface ReportedMessages {
  id: string;
  reported_message_id: string;
  reported_channel_id: string;
  reported_user_id: string;
  guild_id: string;
  log_message_id: string;
  log_channel_id: string;
  reason: string;
  staff_id: string | null;
  staff_username: string | null;
  extra: string | null;
  created_at: Generated<string>;
  deleted_at: string | null;
}

/** 20251128120000_escalation_votes, voting_strategy (20251209140659), scheduled_for (20251217145416). */
export interface Escalations {
  id: string;
  guild_id: string;
  thread_id: string;
  vote_message_id: string;
  reported_user_id: string;
  initiator_id: string;
  flags: string;
  created_at: Generated<string>;
  resolved_at: string | null;
  resolution: string | null;
  voting_strategy: string | null;
  scheduled_for: string | null;
}

/** 20251128120000_escalation_votes. */
export interface EscalationRecords {
  id: string;
  escalation_id: string;
  voter_id: string;
  vote: string;
  voted_at: Generated<string>;
}

/** 20251206211600_add_honeypot_config: primary key (guild_id, channel_id). */
export interface HoneypotConfig {
  guild_id: string;
  channel_id: string;
}

/** 20251204174954_reactji_channeler: unique (guild_id, emoji). */
export interface ReactjiChannelerConfig {
  id: string;
  guild_id: string;
  channel_id: string;
  emoji: string;
  configured_by_id: string;
  threshold: Generated<number>;
  created_at: Generated<string>;
}

/** 20250725192908_user_threads: unique index user_threads_pk (user_id, guild_id). */
export interface UserThreads {
  user_id: string;
  guild_id: string;
  thread_id: string;
  created_at: Generated<string>;
}

/** 20260217000000_deletion_log_threads: unique index deletion_log_threads_pk (user_id, guild_id). */
export interface DeletionLogThreads {
  user_id: string;
  guild_id: string;
  thread_id: string;
  created_at: Generated<string>;
}

/** 20250325193821_tickets. */
export interface TicketsConfig {
  message_id: string;
  channel_id: string | null;
  role_id: string;
}

/** 20260220120000_mod_actions. */
export interface ModActions {
  id: string;
  user_id: string;
  guild_id: string;
  action_type: string;
  executor_id: string | null;
  executor_username: string | null;
  reason: string | null;
  duration: string | null;
  created_at: string;
}

/** 20240906155529-message_stats, code_stats (20250531210224), link_stats (20250612220730). */
export interface MessageStats {
  message_id: string | null;
  author_id: string;
  guild_id: string;
  channel_id: string;
  channel_category: string | null;
  recipient_id: string | null;
  char_count: number;
  word_count: number;
  react_count: Generated<number>;
  sent_at: number;
  code_stats: Generated<string>;
  link_stats: Generated<string>;
}

/** 20260218000000_message_cache. */
export interface MessageCache {
  message_id: string;
  guild_id: string;
  channel_id: string;
  user_id: string;
  content: string | null;
  last_touched: string;
  created_at: string;
}

/** 20250531182208_channel_info. */
export interface ChannelInfo {
  id: string | null;
  name: string | null;
  category: string | null;
}

export interface DB {
  guilds: Guilds;
  guild_subscriptions: GuildSubscriptions;
  reported_messages: ReportedMessages;
  escalations: Escalations;
  escalation_records: EscalationRecords;
  honeypot_config: HoneypotConfig;
  reactji_channeler_config: ReactjiChannelerConfig;
  user_threads: UserThreads;
  deletion_log_threads: DeletionLogThreads;
  tickets_config: TicketsConfig;
  mod_actions: ModActions;
  message_stats: MessageStats;
  message_cache: MessageCache;
  channel_info: ChannelInfo;
}

/** The bot's guild tables, in the order above. */
export const BOT_TABLES = [
  "guilds",
  "guild_subscriptions",
  "reported_messages",
  "escalations",
  "escalation_records",
  "honeypot_config",
  "reactji_channeler_config",
  "user_threads",
  "deletion_log_threads",
  "tickets_config",
  "mod_actions",
  "message_stats",
  "message_cache",
  "channel_info",
] as const satisfies readonly (keyof DB)[];

export type BotTable = (typeof BOT_TABLES)[number];
