-- The schema of reactiflux/mod-bot's SQLite file after `kysely migrate:latest`: every table and
-- index as SQLite keeps them (sqlite_master.sql, in creation order), from the bot's migrations
-- up to 20260220130000_recover_dates_from_snowflakes, run with kysely 0.28.10 and
-- better-sqlite3. The tests open a plain SQLite file with it, as the bot does, and replay on it
-- the statements they send to the gateway.
--
-- Note the bot's declared types: "uuid", "datetime", "json", "jsonb" and "serial" have NUMERIC
-- affinity in SQLite, so text that looks like a number is stored as a number there (guilds.id,
-- declared serial, holds a snowflake as an INTEGER); and a quoted default ('CURRENT_TIMESTAMP')
-- is that literal text, not the time.
CREATE TABLE "kysely_migration" ("name" varchar(255) not null primary key, "timestamp" varchar(255) not null);
CREATE TABLE "kysely_migration_lock" ("id" varchar(255) not null primary key, "is_locked" integer default 0 not null);
CREATE TABLE "users" ("id" uuid not null primary key, "email" text, "externalId" text not null, "authProvider" text default 'discord');
CREATE TABLE "sessions" ("id" uuid primary key, "data" json, "expires" datetime);
CREATE TABLE "guilds" ("id" serial primary key, "settings" jsonb);
CREATE TABLE "message_stats" ("message_id" text primary key, "author_id" text not null, "guild_id" text not null, "channel_id" text not null, "channel_category" text, "recipient_id" text, "char_count" integer not null, "word_count" integer not null, "react_count" integer default 0 not null, "sent_at" integer not null, "code_stats" text default '[]' not null, "link_stats" text default '[]' not null);
CREATE TABLE "tickets_config" ("message_id" text not null primary key, "channel_id" text, "role_id" text not null);
CREATE TABLE "channel_info" ("id" text primary key, "name" text, "category" text);
CREATE TABLE "guild_subscriptions" ("guild_id" text primary key, "stripe_customer_id" text, "stripe_subscription_id" text, "product_tier" text default 'free' not null, "status" text default 'active' not null, "current_period_end" datetime, "created_at" datetime default 'CURRENT_TIMESTAMP', "updated_at" datetime default 'CURRENT_TIMESTAMP');
CREATE TABLE "user_threads" ("user_id" text not null, "guild_id" text not null, "thread_id" text not null, "created_at" datetime default 'CURRENT_TIMESTAMP' not null);
CREATE UNIQUE INDEX "user_threads_pk" on "user_threads" ("user_id", "guild_id");
CREATE TABLE "reported_messages" ("id" uuid not null primary key, "reported_message_id" text not null, "reported_channel_id" text not null, "reported_user_id" text not null, "guild_id" text not null, "log_message_id" text not null, "log_channel_id" text not null, "reason" text not null, "staff_id" text, "staff_username" text, "extra" text, "created_at" datetime default 'CURRENT_TIMESTAMP' not null, "deleted_at" datetime);
CREATE INDEX "idx_reported_user_guild" on "reported_messages" ("reported_user_id", "guild_id");
CREATE INDEX "idx_reported_message" on "reported_messages" ("reported_message_id");
CREATE UNIQUE INDEX "idx_unique_message_reason_guild" on "reported_messages" ("reported_message_id", "reason", "guild_id");
CREATE TABLE "escalations" ("id" text not null primary key, "guild_id" text not null, "thread_id" text not null, "vote_message_id" text not null, "reported_user_id" text not null, "initiator_id" text not null, "flags" text not null, "created_at" datetime default CURRENT_TIMESTAMP not null, "resolved_at" datetime, "resolution" text, "voting_strategy" text, "scheduled_for" text);
CREATE INDEX "idx_pending_escalations" on "escalations" ("guild_id", "resolved_at");
CREATE TABLE "escalation_records" ("id" text not null primary key, "escalation_id" text not null, "voter_id" text not null, "vote" text not null, "voted_at" datetime default CURRENT_TIMESTAMP not null);
CREATE INDEX "idx_vote_records_escalation" on "escalation_records" ("escalation_id");
CREATE TABLE "reactji_channeler_config" ("id" text not null primary key, "guild_id" text not null, "channel_id" text not null, "emoji" text not null, "configured_by_id" text not null, "threshold" integer default 1 not null, "created_at" datetime default CURRENT_TIMESTAMP not null, constraint "unique_guild_emoji" unique ("guild_id", "emoji"));
CREATE TABLE "honeypot_config" ("guild_id" text not null, "channel_id" text not null, constraint "pk_honeypot_guild_channel" primary key ("guild_id", "channel_id"));
CREATE TABLE "deletion_log_threads" ("user_id" text not null, "guild_id" text not null, "thread_id" text not null, "created_at" datetime default 'CURRENT_TIMESTAMP' not null);
CREATE UNIQUE INDEX "deletion_log_threads_pk" on "deletion_log_threads" ("user_id", "guild_id");
CREATE TABLE "message_cache" ("message_id" text not null primary key, "guild_id" text not null, "channel_id" text not null, "user_id" text not null, "content" text, "last_touched" datetime not null, "created_at" datetime not null);
CREATE TABLE "mod_actions" ("id" text not null primary key, "user_id" text not null, "guild_id" text not null, "action_type" text not null, "executor_id" text, "executor_username" text, "reason" text, "duration" text, "created_at" datetime not null);
CREATE INDEX "idx_mod_actions_user_guild" on "mod_actions" ("user_id", "guild_id");
