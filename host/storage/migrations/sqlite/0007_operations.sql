-- Operations: what the rule engine, the event center, the disposal workflows and the
-- notification senders keep. Every queue below (`action_outbox`, `deliveries`) is a table
-- rather than memory so that a restart loses no webhook call or e-mail: workers pick due rows
-- by (state, next_attempt_at) and dead rows stay for an operator to inspect and retry.
-- Keep it identical to the other database's 0007 file except for the id columns and
-- REAL/DOUBLE PRECISION.

-- Rules. `definition` is the rule's JSON as the rule engine reads it; every version is kept in
-- `rule_versions` so that a bad edit can be rolled back and an audit can show who changed what.
CREATE TABLE rules (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    description TEXT NOT NULL,
    enabled     BIGINT NOT NULL DEFAULT 1,
    version     BIGINT NOT NULL,
    definition  TEXT NOT NULL,
    org         TEXT NOT NULL DEFAULT '',
    region      TEXT NOT NULL DEFAULT '/',
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE rule_versions (
    rule_id    TEXT NOT NULL REFERENCES rules (id) ON DELETE CASCADE,
    version    BIGINT NOT NULL,
    definition TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (rule_id, version)
);

-- Counters the rule engine adds to in batches; one row per rule that ever matched.
CREATE TABLE rule_stats (
    rule_id         TEXT PRIMARY KEY REFERENCES rules (id) ON DELETE CASCADE,
    matched         BIGINT NOT NULL DEFAULT 0,
    actions_ok      BIGINT NOT NULL DEFAULT 0,
    actions_failed  BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    last_error_at   BIGINT,
    last_matched_at BIGINT
);

-- Rule actions that failed and wait for another attempt ('pending'), went through ('done') or
-- ran out of attempts ('dead'). No foreign key to rules: an action already triggered still
-- runs, and stays as evidence, when its rule is deleted.
CREATE TABLE action_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    rule_id         TEXT NOT NULL,
    action          TEXT NOT NULL,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX action_outbox_due ON action_outbox (state, next_attempt_at);
CREATE INDEX action_outbox_rule ON action_outbox (rule_id, state);

-- Device alarms. A device has at most one open (not cleared) alarm of a type: the partial
-- unique index is what makes concurrent raises of the same alarm fold into one row (its
-- `occurrences` counts them) instead of flooding the console. A cleared alarm leaves the index,
-- so the next raise opens a new one.
CREATE TABLE alarms (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    product_key     TEXT NOT NULL,
    device_name     TEXT NOT NULL,
    alarm_type      TEXT NOT NULL,
    rule_id         TEXT,
    -- 1 is the most severe, 4 the least.
    level           BIGINT NOT NULL,
    -- 'active', 'acknowledged' or 'cleared'.
    state           TEXT NOT NULL,
    message         TEXT NOT NULL,
    details         TEXT NOT NULL,
    region          TEXT NOT NULL DEFAULT '/',
    org             TEXT NOT NULL DEFAULT '',
    occurrences     BIGINT NOT NULL DEFAULT 1,
    raised_at       BIGINT NOT NULL,
    last_at         BIGINT NOT NULL,
    acknowledged_at BIGINT,
    acknowledged_by TEXT,
    cleared_at      BIGINT,
    cleared_by      TEXT
);
CREATE UNIQUE INDEX alarms_open ON alarms (product_key, device_name, alarm_type)
    WHERE state <> 'cleared';
CREATE INDEX alarms_raised ON alarms (raised_at);
CREATE INDEX alarms_state ON alarms (state, raised_at);
CREATE INDEX alarms_device ON alarms (product_key, device_name, raised_at);

-- City events (a flooded underpass, a fire alarm). `number` is what operators quote on the
-- phone: 'E' + UTC day + '-' + the day's sequence, drawn from `event_numbers` in the same
-- transaction so that two events never share one. `timeline_seq` is the last timeline entry's
-- sequence; bumping it locks the event row, which orders concurrent timeline appends.
CREATE TABLE events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    number       TEXT NOT NULL UNIQUE,
    type_code    TEXT NOT NULL,
    title        TEXT NOT NULL,
    level        BIGINT NOT NULL,
    -- 'new', 'processing', 'closed' or 'isolated'.
    state        TEXT NOT NULL,
    outcome      TEXT,
    region       TEXT NOT NULL DEFAULT '/',
    org          TEXT NOT NULL DEFAULT '',
    lat          REAL,
    lon          REAL,
    fields       TEXT NOT NULL,
    source       TEXT NOT NULL,
    rule_id      TEXT,
    alarm_id     BIGINT,
    merged_count BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL,
    last_at      BIGINT NOT NULL,
    closed_at    BIGINT,
    timeline_seq BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX events_created ON events (created_at);
CREATE INDEX events_type ON events (type_code, state, last_at);
CREATE INDEX events_state ON events (state, created_at);
CREATE INDEX events_level ON events (level, created_at);
CREATE INDEX events_region ON events (region, created_at);

CREATE TABLE event_numbers (
    -- UTC day, yyyymmdd.
    day TEXT PRIMARY KEY,
    seq BIGINT NOT NULL
);

CREATE TABLE event_timeline (
    event_id BIGINT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    seq      BIGINT NOT NULL,
    at       BIGINT NOT NULL,
    actor    TEXT,
    action   TEXT NOT NULL,
    detail   TEXT NOT NULL,
    PRIMARY KEY (event_id, seq)
);

CREATE TABLE event_types (
    code       TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Disposal workflows. Definitions are versioned like rules; a running instance names the
-- version it started with, so editing a definition never changes a disposal under way.
CREATE TABLE workflow_definitions (
    id         TEXT NOT NULL,
    version    BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    definition TEXT NOT NULL,
    enabled    BIGINT NOT NULL DEFAULT 1,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (id, version)
);
CREATE INDEX workflow_definitions_event_type ON workflow_definitions (event_type);

-- One instance per event. `revision` is bumped by every update, which must name the revision
-- it read: two approvers deciding at once cannot both move the instance.
CREATE TABLE workflow_instances (
    event_id           BIGINT PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    definition_id      TEXT NOT NULL,
    definition_version BIGINT NOT NULL,
    -- 'running' or 'completed'.
    state              TEXT NOT NULL,
    instance           TEXT NOT NULL,
    next_deadline      BIGINT,
    revision           BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);
CREATE INDEX workflow_instances_due ON workflow_instances (state, next_deadline);

-- Work items of the disposal workflows, assigned to a user by name or to a role within an
-- organisation and region.
CREATE TABLE tasks (
    id              TEXT PRIMARY KEY,
    event_id        BIGINT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    -- 'disposal' or 'approval'.
    kind            TEXT NOT NULL,
    step_id         TEXT NOT NULL,
    step_name       TEXT NOT NULL,
    title           TEXT NOT NULL,
    -- 'role' or 'user'.
    assignee_kind   TEXT NOT NULL,
    assignee_role   TEXT,
    assignee_org    TEXT,
    assignee_region TEXT,
    assignee_user   TEXT,
    -- 'open', 'approved', 'rejected', 'transferred' or 'cancelled'.
    state           TEXT NOT NULL,
    overdue         BIGINT NOT NULL DEFAULT 0,
    due_at          BIGINT,
    created_at      BIGINT NOT NULL,
    closed_at       BIGINT,
    closed_by       TEXT,
    comment         TEXT
);
CREATE INDEX tasks_event ON tasks (event_id, created_at);
CREATE INDEX tasks_user ON tasks (assignee_user, state);
CREATE INDEX tasks_role ON tasks (assignee_role, state);

-- The message center: notifications and person-to-person messages of each console user.
CREATE TABLE messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    username   TEXT NOT NULL,
    -- 'notification' or 'message'.
    kind       TEXT NOT NULL,
    title      TEXT NOT NULL,
    body       TEXT NOT NULL,
    level      BIGINT,
    -- What the message is about, e.g. 'task:E20261126-000042-t1' or 'event:42'.
    link       TEXT,
    sender     TEXT,
    read_at    BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX messages_user ON messages (username, created_at);

-- Notification channels (e-mail, SMS, IM, in-app). `config` holds no secret; the channel's
-- credential (an SMTP password, an SMS key) is sealed under the master key in `secret_enc`,
-- like device secrets, so a database dump does not hand it out.
CREATE TABLE notification_channels (
    id         TEXT PRIMARY KEY,
    -- 'email', 'sms', 'im' or 'inapp'.
    kind       TEXT NOT NULL,
    config     TEXT NOT NULL,
    secret_enc TEXT,
    plugin_id  TEXT,
    enabled    BIGINT NOT NULL DEFAULT 1,
    updated_at BIGINT NOT NULL
);

CREATE TABLE notification_templates (
    id         TEXT PRIMARY KEY,
    subject    TEXT NOT NULL,
    body       TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE user_preferences (
    username    TEXT PRIMARY KEY,
    preferences TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- Every notification sent through a channel: 'pending' until the first attempt, 'failed'
-- while a retry is scheduled, then 'sent' or, out of attempts, 'dead'.
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_id      TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body            TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    message_id      TEXT,
    reference       TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
CREATE INDEX deliveries_reference ON deliveries (reference);
CREATE INDEX deliveries_created ON deliveries (created_at);
