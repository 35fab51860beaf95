"""Versioned migrations. ``PRAGMA user_version`` holds the applied version."""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
    # 1: core chat
    """
    CREATE TABLE conversations(
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,                 -- 'dm' | 'circle'
        name TEXT NOT NULL DEFAULT '',
        category TEXT,
        certified INTEGER NOT NULL DEFAULT 0,
        description TEXT NOT NULL DEFAULT '',
        announcement TEXT NOT NULL DEFAULT '',
        owner TEXT,
        created_ts INTEGER NOT NULL,
        last_seq INTEGER NOT NULL DEFAULT 0,
        last_pos INTEGER NOT NULL DEFAULT 0,
        member_count INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX conversations_list ON conversations(kind, category, id);
    CREATE TABLE members(
        conv TEXT NOT NULL,
        user TEXT NOT NULL,
        role TEXT NOT NULL,                 -- 'owner' | 'admin' | 'member'
        read_seq INTEGER NOT NULL DEFAULT 0,
        muted_until INTEGER NOT NULL DEFAULT 0,
        joined_seq INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY(conv, user)
    ) WITHOUT ROWID;
    CREATE INDEX members_user ON members(user, conv);
    -- A rowid table keyed by the global position: inserts append at the end
    -- (measured faster than clustering by (conv, seq), whose inserts land
    -- mid-tree, one place per conversation).
    CREATE TABLE messages(
        pos INTEGER PRIMARY KEY,            -- global commit position (counters 'pos')
        conv TEXT NOT NULL,
        seq INTEGER NOT NULL,               -- gapless per conversation
        sender TEXT NOT NULL,
        cid TEXT,                           -- sender's idempotency key
        ts INTEGER NOT NULL,
        kind INTEGER NOT NULL,              -- 0 text, 1 system
        data BLOB NOT NULL,                 -- msgpack: author, text, mentions, event
        recalled INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX messages_seq ON messages(conv, seq);
    CREATE INDEX messages_pos ON messages(conv, pos);
    CREATE UNIQUE INDEX messages_cid ON messages(sender, cid) WHERE cid IS NOT NULL;
    CREATE TABLE blocks(
        blocker TEXT NOT NULL,
        blocked TEXT NOT NULL,
        PRIMARY KEY(blocker, blocked)
    ) WITHOUT ROWID;
    CREATE TABLE counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO counters VALUES ('circle', 0), ('pos', 0);
    """,
    # 2: points (docs/points.md). Interactions that are messages (message.sent,
    # circle.joined) need no outbox row: the message row, written in the same
    # transaction, is the event (ordered by pos). Other interactions write one
    # row in `events` in their own transaction.
    """
    CREATE TABLE events(
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,           -- idempotency key
        kind TEXT NOT NULL,
        user TEXT NOT NULL,
        conv TEXT,
        ts INTEGER NOT NULL,
        data BLOB NOT NULL                  -- msgpack map
    );
    -- per hook and event source: the last event fully processed
    CREATE TABLE hook_cursors(
        hook TEXT NOT NULL,
        source TEXT NOT NULL,               -- 'messages' (pos) | 'events' (id)
        pos INTEGER NOT NULL,
        PRIMARY KEY(hook, source)
    ) WITHOUT ROWID;
    CREATE TABLE hook_failures(
        hook TEXT NOT NULL,
        event_key TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        error TEXT NOT NULL,
        ts INTEGER NOT NULL,
        PRIMARY KEY(hook, event_key)
    ) WITHOUT ROWID;
    -- append-only; an entry's key is its idempotency key
    CREATE TABLE ledger(
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        user TEXT NOT NULL,
        currency TEXT NOT NULL,             -- 'points' | 'cv' (contribution value)
        amount INTEGER NOT NULL,            -- may be 0: an award a daily cap blocked
        rule TEXT NOT NULL,
        ref TEXT NOT NULL DEFAULT '',       -- event key, message, red packet
        note TEXT NOT NULL DEFAULT '',
        ts INTEGER NOT NULL
    );
    CREATE INDEX ledger_user ON ledger(user, id);
    CREATE TABLE balances(
        user TEXT NOT NULL,
        currency TEXT NOT NULL,
        amount INTEGER NOT NULL CHECK (amount >= 0),
        PRIMARY KEY(user, currency)
    ) WITHOUT ROWID;
    CREATE INDEX balances_rank ON balances(currency, amount);
    CREATE TABLE daily(
        user TEXT NOT NULL,
        rule TEXT NOT NULL,
        day TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY(user, rule, day)
    ) WITHOUT ROWID;
    CREATE TABLE red_packets(
        id TEXT PRIMARY KEY,                -- rp:<n>
        conv TEXT NOT NULL,
        sender TEXT NOT NULL,
        total INTEGER NOT NULL,
        shares INTEGER NOT NULL,
        split TEXT NOT NULL,                -- 'random' | 'equal'
        amounts BLOB NOT NULL,              -- msgpack list: the shares still to claim
        held INTEGER NOT NULL,              -- points still held (not yet claimed or refunded)
        created_ts INTEGER NOT NULL,
        expires_ts INTEGER NOT NULL,
        state TEXT NOT NULL                 -- 'open' | 'done' | 'expired'
    ) WITHOUT ROWID;
    CREATE INDEX red_packets_open ON red_packets(state, expires_ts);
    CREATE TABLE red_claims(
        packet TEXT NOT NULL,
        user TEXT NOT NULL,
        amount INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        PRIMARY KEY(packet, user)
    ) WITHOUT ROWID;
    CREATE TABLE leases(name TEXT PRIMARY KEY, owner TEXT NOT NULL, until INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO counters VALUES ('red_packet', 0);
    """,
    # 3: the users the server has seen (a DM is opened only to one of them, unless
    # configured otherwise), mutes that outlive a membership, and per-user quotas
    # over fixed windows (creation ops).
    # Users in some conversation before this migration count as seen.
    """
    CREATE TABLE users(
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,                 -- '' when only known from a membership
        name TEXT NOT NULL,
        first_seen INTEGER NOT NULL         -- ms
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO users SELECT DISTINCT user, '', user, 0 FROM members;
    -- a mute binds the user in that conversation until it ends, member or not
    -- (leaving and joining again does not lift it)
    CREATE TABLE mutes(
        conv TEXT NOT NULL,
        user TEXT NOT NULL,
        until INTEGER NOT NULL,             -- ms
        PRIMARY KEY(conv, user)
    ) WITHOUT ROWID;
    INSERT INTO mutes SELECT conv, user, muted_until FROM members WHERE muted_until > 0;
    -- the store's epoch: names its position space. A client's pos from a store of
    -- another epoch means nothing here (protocol/README.md, catch-up)
    CREATE TABLE meta(name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    INSERT INTO meta VALUES ('epoch', lower(hex(randomblob(8))));
    CREATE TABLE quotas(
        user TEXT NOT NULL,
        action TEXT NOT NULL,
        window INTEGER NOT NULL,            -- start of the fixed window, ms
        n INTEGER NOT NULL,
        PRIMARY KEY(user, action, window)
    ) WITHOUT ROWID;
    """,
    # 4: offline notifications (chatd/notify). The planner reads message rows
    # past its cursor (hook_cursors 'notify'/'messages') and writes the
    # notifications it decides, with its cursor, in one transaction: exactly
    # once. Each notification hook reads them past its own cursor
    # ('notify:<hook>'/'notifications').
    """
    CREATE TABLE notify_prefs(
        user TEXT PRIMARY KEY,
        muted_until INTEGER NOT NULL DEFAULT 0,     -- ms; 0: not muted
        quiet_from INTEGER,                         -- minute of the local day; NULL: no quiet hours
        quiet_to INTEGER,
        utc_offset INTEGER NOT NULL DEFAULT 0       -- minutes
    ) WITHOUT ROWID;
    CREATE TABLE notify_mutes(
        user TEXT NOT NULL,
        conv TEXT NOT NULL,
        until INTEGER NOT NULL,                     -- ms
        PRIMARY KEY(user, conv)
    ) WITHOUT ROWID;
    -- coalescing: one notification per (user, conversation) per interval
    CREATE TABLE notify_state(
        user TEXT NOT NULL,
        conv TEXT NOT NULL,
        conv_kind TEXT NOT NULL,
        last_at INTEGER NOT NULL,                   -- ms: the last notification emitted
        pending INTEGER NOT NULL DEFAULT 0,         -- messages since, to go out as one
        last_seq INTEGER NOT NULL DEFAULT 0,
        sender TEXT NOT NULL DEFAULT '',
        sender_name TEXT NOT NULL DEFAULT '',
        preview TEXT NOT NULL DEFAULT '',
        reason TEXT NOT NULL DEFAULT '',
        PRIMARY KEY(user, conv)
    ) WITHOUT ROWID;
    CREATE INDEX notify_state_due ON notify_state(last_at) WHERE pending > 0;
    CREATE TABLE notifications(
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,                   -- user:conv:seq
        user TEXT NOT NULL,
        conv TEXT NOT NULL,
        conv_kind TEXT NOT NULL,
        reason TEXT NOT NULL,
        seq INTEGER NOT NULL,
        count INTEGER NOT NULL,
        sender TEXT NOT NULL,
        sender_name TEXT NOT NULL,
        preview TEXT NOT NULL,
        silent INTEGER NOT NULL,
        ts INTEGER NOT NULL
    );
    CREATE INDEX notifications_ts ON notifications(ts);
    """,
    # 5: signing users out (the admin API): a user's tokens issued before
    # ``before`` (unix seconds, as the token's iat) are refused (admin.revoke);
    # sockets whose auth began before ``kicked`` (ms) are closed (admin.kick)
    """
    CREATE TABLE revocations(
        user TEXT PRIMARY KEY,
        before INTEGER NOT NULL DEFAULT 0,
        kicked INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    """,
    # 6: service groups (docs/service-groups.md): a conversation of kind 'service'
    # per owner, id s:<owner>; its Fellow and tags; each staff member's badges.
    # service_tags indexes the tags for campaigns (tag -> groups).
    """
    ALTER TABLE conversations ADD COLUMN fellow TEXT;
    ALTER TABLE conversations ADD COLUMN tags TEXT;         -- JSON object
    ALTER TABLE members ADD COLUMN badges TEXT;             -- JSON list (service groups' staff)
    CREATE TABLE service_tags(
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        conv TEXT NOT NULL,
        PRIMARY KEY(key, value, conv)
    ) WITHOUT ROWID;
    """,
    # 7: service clocks, episodes, requests, ratings and credit
    # (docs/service-groups.md). service_state is one row per group, written in
    # the transaction of every message in it (the kind's clock effect); the
    # staff inbox reads it through the staff member's memberships.
    """
    CREATE TABLE service_state(
        conv TEXT PRIMARY KEY,
        episode INTEGER NOT NULL DEFAULT 0,         -- the current (or last) episode; 0: none yet
        open INTEGER NOT NULL DEFAULT 0,            -- 1 while that episode is open
        state TEXT NOT NULL DEFAULT 'closed',       -- bot | human | needs_human | closed
        waiting_since INTEGER,                      -- ms: the oldest customer message no staff answered
        waiting_seq INTEGER,
        due INTEGER,                                -- ms: when the response is due, while waiting
        alerted INTEGER NOT NULL DEFAULT 0,         -- 0, 1 (the Fellow alerted), 2 (escalated)
        answered INTEGER NOT NULL DEFAULT 0,        -- a staff reply in this episode yet (next-response clock)
        requests INTEGER NOT NULL DEFAULT 0,        -- open service requests
        urgent INTEGER NOT NULL DEFAULT 0,          -- of which urgent
        last_staff INTEGER NOT NULL DEFAULT 0,      -- ms of the last staff reply
        last_activity INTEGER NOT NULL DEFAULT 0,   -- ms of the episode's last message
        rev INTEGER NOT NULL DEFAULT 0              -- +1 on every change: the newest inbox push wins
    ) WITHOUT ROWID;
    CREATE INDEX service_due ON service_state(alerted, due) WHERE due IS NOT NULL;
    CREATE INDEX service_idle ON service_state(last_activity) WHERE open = 1;
    INSERT INTO service_state(conv) SELECT id FROM conversations WHERE kind = 'service';
    -- a group's tags are replaced by conv (schema 6 indexed them for campaigns only)
    CREATE INDEX service_tags_conv ON service_tags(conv);
    CREATE TABLE service_episodes(
        conv TEXT NOT NULL,
        episode INTEGER NOT NULL,
        opened_ts INTEGER NOT NULL,
        opened_seq INTEGER NOT NULL,
        fellow TEXT NOT NULL,                       -- accountable: the Fellow when it closed
        closed_ts INTEGER,
        closed_by TEXT,
        stars INTEGER,
        comment TEXT,
        rated_ts INTEGER,
        PRIMARY KEY(conv, episode)
    ) WITHOUT ROWID;
    CREATE INDEX service_episodes_closed ON service_episodes(closed_ts);
    -- every staff or bot reply in an open episode: reply shares (credit) and
    -- response times (reports) are computed from these rows, never cached
    CREATE TABLE service_replies(
        conv TEXT NOT NULL,
        seq INTEGER NOT NULL,
        episode INTEGER NOT NULL,
        user TEXT NOT NULL,
        role TEXT NOT NULL,                         -- fellow | staff | bot
        ts INTEGER NOT NULL,
        waited INTEGER,                             -- ms the customer had waited, when it stopped the clock
        late INTEGER NOT NULL DEFAULT 0,            -- it stopped the clock after the due time
        first INTEGER NOT NULL DEFAULT 0,           -- the episode's first response
        PRIMARY KEY(conv, seq)
    ) WITHOUT ROWID;
    CREATE INDEX service_replies_episode ON service_replies(conv, episode);
    CREATE INDEX service_replies_ts ON service_replies(ts);
    CREATE TABLE service_requests(
        conv TEXT NOT NULL,
        id INTEGER NOT NULL,
        type TEXT NOT NULL,
        status TEXT NOT NULL,
        urgent INTEGER NOT NULL,
        note TEXT NOT NULL,
        rid TEXT NOT NULL,                          -- the owner's idempotency key
        episode INTEGER NOT NULL,
        created_ts INTEGER NOT NULL,
        updated_ts INTEGER NOT NULL,
        updated_by TEXT NOT NULL,
        PRIMARY KEY(conv, id)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX service_requests_rid ON service_requests(conv, rid);
    -- a bot's claim on a customer message: the first wins (the others: conflict)
    CREATE TABLE service_claims(
        conv TEXT NOT NULL,
        seq INTEGER NOT NULL,
        bot TEXT NOT NULL,
        ts INTEGER NOT NULL,
        PRIMARY KEY(conv, seq)
    ) WITHOUT ROWID;
    -- care campaigns: one backend call posts a claimable card into every service
    -- group matching the tags, in chunks (a scheduler job: cursor, posted); each
    -- owner claims once, at most ``stock`` claims in all
    CREATE TABLE campaigns(
        id INTEGER PRIMARY KEY,
        actor TEXT NOT NULL,
        cid TEXT NOT NULL,
        author TEXT NOT NULL,                       -- JSON: the backend's author snapshot
        card TEXT NOT NULL,                         -- JSON
        tags TEXT NOT NULL,                         -- JSON object; {}: every group
        stock INTEGER,                              -- NULL: no limit
        points INTEGER NOT NULL,                    -- credited per claim
        targets INTEGER NOT NULL,                   -- groups matching when it was made
        posted INTEGER NOT NULL DEFAULT 0,
        cursor TEXT NOT NULL DEFAULT '',            -- the last group posted into (ids in order)
        claimed INTEGER NOT NULL DEFAULT 0,
        created_ts INTEGER NOT NULL,
        done_ts INTEGER
    );
    CREATE UNIQUE INDEX campaigns_cid ON campaigns(actor, cid);
    CREATE TABLE campaign_posts(
        campaign INTEGER NOT NULL,
        conv TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY(campaign, conv)
    ) WITHOUT ROWID;
    CREATE TABLE campaign_claims(
        campaign INTEGER NOT NULL,
        user TEXT NOT NULL,
        points INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        PRIMARY KEY(campaign, user)
    ) WITHOUT ROWID;
    CREATE TABLE service_credit(
        conv TEXT NOT NULL,
        episode INTEGER NOT NULL,
        user TEXT NOT NULL,
        share INTEGER NOT NULL,                     -- millionths of the rating; an episode's sum to 1,000,000
        PRIMARY KEY(conv, episode, user)
    ) WITHOUT ROWID;
    """,
    # 8: live Q&A sessions and polls (docs/live-sessions.md). Viewers are not
    # stored; hosts and moderators are (live_roles). A session's rooms are
    # conversations of kind 'live' (their audience chat lines are messages).
    """
    CREATE TABLE live_sessions(
        id TEXT PRIMARY KEY,                        -- l:<n>
        creator TEXT NOT NULL,
        cid TEXT NOT NULL,
        title TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL,                        -- scheduled | live | ended | archived
        starts_ts INTEGER NOT NULL DEFAULT 0,
        approval INTEGER NOT NULL DEFAULT 0,        -- questions shown after approval
        anonymous INTEGER NOT NULL DEFAULT 0,       -- anonymous questions allowed
        slow_s INTEGER NOT NULL DEFAULT 0,
        ask_interval_s INTEGER NOT NULL DEFAULT 60,
        rooms TEXT NOT NULL,                        -- JSON list of room names, "main" first
        pinned INTEGER,
        version INTEGER NOT NULL DEFAULT 0,         -- moves with every question or vote change
        peak INTEGER NOT NULL DEFAULT 0,
        created_ts INTEGER NOT NULL,
        started_ts INTEGER,
        ended_ts INTEGER
    );
    CREATE UNIQUE INDEX live_sessions_cid ON live_sessions(creator, cid);
    CREATE INDEX live_sessions_state ON live_sessions(state, id);
    CREATE TABLE live_roles(
        session TEXT NOT NULL,
        user TEXT NOT NULL,
        role TEXT NOT NULL,                         -- host | moderator
        PRIMARY KEY(session, user)
    ) WITHOUT ROWID;
    CREATE TABLE live_follows(
        session TEXT NOT NULL,
        user TEXT NOT NULL,
        PRIMARY KEY(session, user)
    ) WITHOUT ROWID;
    CREATE TABLE live_questions(
        id INTEGER PRIMARY KEY,
        session TEXT NOT NULL,
        room TEXT NOT NULL,
        asker TEXT NOT NULL,
        author TEXT NOT NULL,                       -- JSON: the asker's name, type, badges
        anonymous INTEGER NOT NULL,
        cid TEXT NOT NULL,
        text TEXT NOT NULL,
        state TEXT NOT NULL,
        votes INTEGER NOT NULL DEFAULT 0,
        created_ts INTEGER NOT NULL,
        answer TEXT,
        answered_live INTEGER NOT NULL DEFAULT 0,
        answered_by TEXT,
        answered_ts INTEGER,
        merged_into INTEGER
    );
    CREATE UNIQUE INDEX live_questions_cid ON live_questions(asker, cid);
    CREATE INDEX live_questions_session ON live_questions(session, state, id);
    CREATE INDEX live_questions_asker ON live_questions(session, asker, created_ts);
    CREATE TABLE live_votes(
        question INTEGER NOT NULL,
        user TEXT NOT NULL,
        session TEXT NOT NULL,
        ts INTEGER NOT NULL,
        PRIMARY KEY(question, user)
    ) WITHOUT ROWID;
    CREATE INDEX live_votes_user ON live_votes(session, user);
    CREATE TABLE live_mutes(
        session TEXT NOT NULL,
        user TEXT NOT NULL,
        until INTEGER NOT NULL,
        PRIMARY KEY(session, user)
    ) WITHOUT ROWID;
    CREATE TABLE live_lines(                        -- slow mode: each user's last line per session
        session TEXT NOT NULL,
        user TEXT NOT NULL,
        ts INTEGER NOT NULL,
        PRIMARY KEY(session, user)
    ) WITHOUT ROWID;
    CREATE TABLE live_attendance(
        session TEXT NOT NULL,
        user TEXT NOT NULL,
        ts INTEGER NOT NULL,
        PRIMARY KEY(session, user)
    ) WITHOUT ROWID;
    CREATE TABLE polls(
        id INTEGER PRIMARY KEY,
        conv TEXT NOT NULL,                         -- a live session (l:<n>) or a circle
        creator TEXT NOT NULL,
        cid TEXT NOT NULL,
        question TEXT NOT NULL,
        options TEXT NOT NULL,                      -- JSON list
        multi INTEGER NOT NULL,
        weighted INTEGER NOT NULL,
        closes_ts INTEGER NOT NULL,
        closed_ts INTEGER,
        version INTEGER NOT NULL DEFAULT 0,
        created_ts INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX polls_cid ON polls(creator, cid);
    CREATE INDEX polls_conv ON polls(conv, id);
    CREATE TABLE poll_votes(
        poll INTEGER NOT NULL,
        user TEXT NOT NULL,
        options TEXT NOT NULL,                      -- JSON list of option numbers
        weight INTEGER NOT NULL,                    -- fixed when the vote is cast
        type TEXT NOT NULL,                         -- the voter's identity type then
        ts INTEGER NOT NULL,
        PRIMARY KEY(poll, user)
    ) WITHOUT ROWID;
    INSERT INTO counters VALUES ('live', 0);
    """,
]


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations, each in its own transaction. Returns the version.

    Several processes may start on one file at once (``--workers``): one that
    loses the race finds the migration applied and moves on."""
    while True:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version >= len(MIGRATIONS):
            return len(MIGRATIONS)
        try:
            conn.executescript(f"BEGIN IMMEDIATE;\n{MIGRATIONS[version]}\nPRAGMA user_version = {version + 1};\nCOMMIT;")
        except sqlite3.OperationalError:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if conn.execute("PRAGMA user_version").fetchone()[0] > version:
                continue  # another process applied it meanwhile
            raise
