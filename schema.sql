-- guild-gateway: what one gateway pod stores about the guilds it owns.
--
-- Table and column names and types are those of the TypeScript bot's tables, so its tooling
-- can read a pod's file. Additions are marked "added:" with the reason.
-- Every statement is idempotent: the schema is applied at each start.

CREATE TABLE IF NOT EXISTS guilds (
    id       TEXT PRIMARY KEY,
    settings TEXT NOT NULL DEFAULT '{}'
);
-- added: the settings stay a JSON document whoever writes them (the bot writes the column
-- through the data API; the settings endpoints read and patch it as JSON). A trigger rather
-- than a CHECK, which SQLite cannot add to an existing table.
CREATE TRIGGER IF NOT EXISTS guilds_settings_json_insert BEFORE INSERT ON guilds
    WHEN NOT json_valid(NEW.settings)
    BEGIN SELECT RAISE(ABORT, 'guilds.settings must be a JSON document'); END;
CREATE TRIGGER IF NOT EXISTS guilds_settings_json_update BEFORE UPDATE OF settings ON guilds
    WHEN NOT json_valid(NEW.settings)
    BEGIN SELECT RAISE(ABORT, 'guilds.settings must be a JSON document'); END;

CREATE TABLE IF NOT EXISTS channel_info (
    id       TEXT PRIMARY KEY,
    name     TEXT,
    category TEXT
);

-- added: what the gateway needs to know about a channel beyond the bot's channel_info: its
-- guild (writes are scoped to it, and a guild's rows move with it), type (which channels count
-- for message_stats) and parent (what its category is), so a guild actor started after
-- passivation or a restart knows its channels. A table of its own, not columns of
-- channel_info: the dashboard joins channel_info to message_stats and names guild_id
-- unqualified, so any added column that message_stats also has makes its SQL ambiguous.
-- Files that had these as channel_info columns are migrated at open (store.rs).
CREATE TABLE IF NOT EXISTS guild_channels (
    channel_id   TEXT PRIMARY KEY,
    guild_id     TEXT NOT NULL,
    channel_type INTEGER,
    parent_id    TEXT
) WITHOUT ROWID;
-- added: a guild actor loads its guild's channels at start.
CREATE INDEX IF NOT EXISTS guild_channels_guild ON guild_channels (guild_id);
-- added: a channel's rename updates its children's category, found by parent_id (and guild);
-- without this index every CHANNEL_UPDATE scans the whole table. Created at open in existing
-- files too.
CREATE INDEX IF NOT EXISTS guild_channels_parent ON guild_channels (parent_id, guild_id);

CREATE TABLE IF NOT EXISTS message_stats (
    message_id       TEXT PRIMARY KEY,
    author_id        TEXT NOT NULL,
    guild_id         TEXT NOT NULL,
    channel_id       TEXT NOT NULL,
    channel_category TEXT,
    recipient_id     TEXT,
    char_count       INTEGER NOT NULL,
    word_count       INTEGER NOT NULL,
    react_count      INTEGER NOT NULL DEFAULT 0,
    sent_at          INTEGER NOT NULL,
    code_stats       TEXT NOT NULL DEFAULT '[]',
    link_stats       TEXT NOT NULL DEFAULT '[]'
);
-- added: per-guild queries and the move of a guild's rows to a new owner.
CREATE INDEX IF NOT EXISTS message_stats_guild ON message_stats (guild_id, sent_at);

-- added: which (message, user, emoji) reactions are present (1) or were removed (0), so that a
-- redelivered MESSAGE_REACTION_ADD/REMOVE does not count twice (writes are idempotent).
CREATE TABLE IF NOT EXISTS message_reactions (
    message_id TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    emoji      TEXT NOT NULL,
    present    INTEGER NOT NULL,
    PRIMARY KEY (message_id, user_id, emoji)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS message_cache (
    message_id   TEXT PRIMARY KEY,
    guild_id     TEXT NOT NULL,
    channel_id   TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    content      TEXT,
    last_touched TEXT NOT NULL,
    created_at   TEXT NOT NULL
);
-- added: the periodic expiry job scans by these.
CREATE INDEX IF NOT EXISTS message_cache_last_touched ON message_cache (last_touched);
CREATE INDEX IF NOT EXISTS message_cache_created_at ON message_cache (created_at);

-- The moderation log, as the TypeScript bot's (id TEXT: the bot writes crypto.randomUUID(),
-- and the gateway's own rows get a UUID of the same form, so ids are unique across pods and a
-- moved guild's rows keep theirs). executor_username is NULL in the gateway's rows: its audit
-- log entries carry only the executor's id.
CREATE TABLE IF NOT EXISTS mod_actions (
    id                TEXT PRIMARY KEY NOT NULL,
    user_id           TEXT NOT NULL,
    guild_id          TEXT NOT NULL,
    action_type       TEXT NOT NULL,
    executor_id       TEXT,
    executor_username TEXT,
    reason            TEXT,
    duration          TEXT,
    created_at        DATETIME NOT NULL,
    -- added: what makes a redelivered action the same row ("audit:<entry id>" when paired with
    -- its audit log entry, else derived from the event); NULL rows are never deduplicated.
    -- A column here, unlike channel_info's additions: no table of the bot has a source_key,
    -- so no unqualified name in a join with mod_actions becomes ambiguous.
    source_key        TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS idx_mod_actions_user_guild ON mod_actions (user_id, guild_id);
-- added: per-guild queries and moves.
CREATE INDEX IF NOT EXISTS mod_actions_guild ON mod_actions (guild_id, created_at);
-- added: a late audit log entry finds the row its event got without it.
CREATE INDEX IF NOT EXISTS mod_actions_target ON mod_actions (guild_id, user_id, action_type);

-- The bot's other guild-scoped tables, with the columns, types, keys, defaults and indexes its
-- migrations (reactiflux/mod-bot, migrations/) leave. The bot writes them through the data API
-- (POST /v1/guilds/{id}/execute); the gateway itself never does. Their quoted
-- 'CURRENT_TIMESTAMP' defaults are the bot's too (its inserts give created_at explicitly).
-- Which column, or which join, ties each row to its guild is in actors/src/storage/tables.rs.

CREATE TABLE IF NOT EXISTS tickets_config (
    message_id TEXT PRIMARY KEY NOT NULL,
    channel_id TEXT,
    role_id    TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS guild_subscriptions (
    guild_id               TEXT PRIMARY KEY,
    stripe_customer_id     TEXT,
    stripe_subscription_id TEXT,
    product_tier           TEXT NOT NULL DEFAULT 'free',
    status                 TEXT NOT NULL DEFAULT 'active',
    current_period_end     DATETIME,
    created_at             DATETIME DEFAULT 'CURRENT_TIMESTAMP',
    updated_at             DATETIME DEFAULT 'CURRENT_TIMESTAMP'
);

CREATE TABLE IF NOT EXISTS user_threads (
    user_id    TEXT NOT NULL,
    guild_id   TEXT NOT NULL,
    thread_id  TEXT NOT NULL,
    created_at DATETIME DEFAULT 'CURRENT_TIMESTAMP' NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS user_threads_pk ON user_threads (user_id, guild_id);

CREATE TABLE IF NOT EXISTS reported_messages (
    id                  UUID PRIMARY KEY NOT NULL,
    reported_message_id TEXT NOT NULL,
    reported_channel_id TEXT NOT NULL,
    reported_user_id    TEXT NOT NULL,
    guild_id            TEXT NOT NULL,
    log_message_id      TEXT NOT NULL,
    log_channel_id      TEXT NOT NULL,
    reason              TEXT NOT NULL,
    staff_id            TEXT,
    staff_username      TEXT,
    extra               TEXT,
    created_at          DATETIME DEFAULT 'CURRENT_TIMESTAMP' NOT NULL,
    deleted_at          DATETIME
);
CREATE INDEX IF NOT EXISTS idx_reported_user_guild ON reported_messages (reported_user_id, guild_id);
CREATE INDEX IF NOT EXISTS idx_reported_message ON reported_messages (reported_message_id);
CREATE UNIQUE INDEX IF NOT EXISTS idx_unique_message_reason_guild
    ON reported_messages (reported_message_id, reason, guild_id);

CREATE TABLE IF NOT EXISTS escalations (
    id               TEXT PRIMARY KEY NOT NULL,
    guild_id         TEXT NOT NULL,
    thread_id        TEXT NOT NULL,
    vote_message_id  TEXT NOT NULL,
    reported_user_id TEXT NOT NULL,
    initiator_id     TEXT NOT NULL,
    flags            TEXT NOT NULL,
    created_at       DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    resolved_at      DATETIME,
    resolution       TEXT,
    voting_strategy  TEXT,
    scheduled_for    TEXT
);
CREATE INDEX IF NOT EXISTS idx_pending_escalations ON escalations (guild_id, resolved_at);

CREATE TABLE IF NOT EXISTS escalation_records (
    id            TEXT PRIMARY KEY NOT NULL,
    escalation_id TEXT NOT NULL,
    voter_id      TEXT NOT NULL,
    vote          TEXT NOT NULL,
    voted_at      DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_vote_records_escalation ON escalation_records (escalation_id);

CREATE TABLE IF NOT EXISTS reactji_channeler_config (
    id               TEXT PRIMARY KEY NOT NULL,
    guild_id         TEXT NOT NULL,
    channel_id       TEXT NOT NULL,
    emoji            TEXT NOT NULL,
    configured_by_id TEXT NOT NULL,
    threshold        INTEGER NOT NULL DEFAULT 1,
    created_at       DATETIME DEFAULT CURRENT_TIMESTAMP NOT NULL,
    CONSTRAINT unique_guild_emoji UNIQUE (guild_id, emoji)
);

CREATE TABLE IF NOT EXISTS honeypot_config (
    guild_id   TEXT NOT NULL,
    channel_id TEXT NOT NULL,
    CONSTRAINT pk_honeypot_guild_channel PRIMARY KEY (guild_id, channel_id)
);

CREATE TABLE IF NOT EXISTS deletion_log_threads (
    user_id    TEXT NOT NULL,
    guild_id   TEXT NOT NULL,
    thread_id  TEXT NOT NULL,
    created_at DATETIME DEFAULT 'CURRENT_TIMESTAMP' NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS deletion_log_threads_pk ON deletion_log_threads (user_id, guild_id);

-- added: audit log entries that arrived after their event's row was written without them, and
-- completed (or, for the bot's own actions, removed) that row. The row keeps its own
-- source_key, so a redelivered event is still recognised; this records the entry, so a
-- redelivered entry changes nothing more and a later pairing of the two writes no second row.
CREATE TABLE IF NOT EXISTS mod_action_late_entries (
    source_key TEXT PRIMARY KEY,
    guild_id   TEXT NOT NULL
) WITHOUT ROWID;

-- added: members who left while no kick entry came within the audit window. A kick entry that
-- comes later turns the latest such removal into its kick row (and consumes it); removals
-- older than a day are deleted.
CREATE TABLE IF NOT EXISTS unpaired_member_removals (
    guild_id   TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    removed_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS unpaired_member_removals_member
    ON unpaired_member_removals (guild_id, user_id, removed_at);

-- added: each member's current timeout, so a guild actor started after passivation or a
-- restart knows whether a cleared timeout was a removal.
CREATE TABLE IF NOT EXISTS member_timeouts (
    guild_id TEXT NOT NULL,
    user_id  TEXT NOT NULL,
    until_ms INTEGER NOT NULL,
    PRIMARY KEY (guild_id, user_id)
) WITHOUT ROWID;

-- added: this pod's committed ownership (live rescale, see actors/src/domain/ownership.rs):
-- the layout every pod must agree on, its epoch, and the transition under way. One row. A
-- restart follows it, whatever NUM_GATEWAY_PODS says (a differing setting is flagged).
CREATE TABLE IF NOT EXISTS gateway_ownership (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    epoch         INTEGER NOT NULL,
    pods          INTEGER NOT NULL,
    strategy      TEXT NOT NULL,
    shards        INTEGER NOT NULL,
    next_epoch    INTEGER,
    next_pods     INTEGER,
    next_strategy TEXT,
    next_shards   INTEGER,
    frozen        INTEGER NOT NULL DEFAULT 0,
    live          INTEGER NOT NULL DEFAULT 0,
    -- the epoch of the Discord sessions the pod applies events from
    sessions_epoch INTEGER NOT NULL DEFAULT 1,
    -- added: the id of the rescale command's operation that prepared the transition (one
    -- operation at a time; another is refused with this id)
    operation     INTEGER
);

-- added: a guild's state as the pod's relay last told its clients (the GUILD_CREATE it would
-- send), written by an old owner at a rescale's freeze so that the export carries it to the
-- new owner's relay. Only in transit: a relay keeps its guilds' state in memory.
CREATE TABLE IF NOT EXISTS relay_documents (
    guild_id TEXT PRIMARY KEY,
    document TEXT NOT NULL
);

-- added: the events of guilds coming to this pod during a rescale, in arrival order, until the
-- epoch commits (then emptied).
CREATE TABLE IF NOT EXISTS gateway_captured (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id TEXT NOT NULL,
    seq      INTEGER,
    kind     TEXT NOT NULL,
    payload  TEXT NOT NULL,
    -- added: when the pod received it (Unix ms): a re-applied timeout is judged as of then
    received_ms INTEGER
);

-- added: moderation events and audit entries of guilds given away in a rescale that were still
-- waiting for their counterpart at the freeze: exported with the guilds, re-applied first by
-- the new owner (which pairs them with what follows). Emptied at the commit.
CREATE TABLE IF NOT EXISTS gateway_handover (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id    TEXT NOT NULL,
    seq         INTEGER,
    kind        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    -- a retried import adds nothing
    UNIQUE (guild_id, kind, payload, received_ms)
);

-- added: the anchors of a rescale's freeze (actors/src/domain/anchor.rs): where each group of
-- moving guilds passed from its old owner (`source`) to its new one (`target`). The old owner
-- writes its own at the freeze; the export carries them to the new owner, which re-applies its
-- capture log from each passed anchor on. Emptied at the commit.
CREATE TABLE IF NOT EXISTS gateway_anchors (
    source   INTEGER NOT NULL,
    target   INTEGER NOT NULL,
    -- the shard, or the guild id (bits of a u64)
    grp      INTEGER NOT NULL,
    identity INTEGER NOT NULL,
    -- group events from the anchor on that the old owner applied too
    skip     INTEGER NOT NULL,
    passed   INTEGER NOT NULL,
    PRIMARY KEY (source, target, grp)
);
