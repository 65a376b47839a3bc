-- Switchboard's PostgreSQL schema (storage.backend = "postgres"), applied by `serve` itself
-- (src/store/postgres/migrate.rs: refinery, under an advisory lock). Never edit a migration
-- that has shipped: add V2__….sql beside it.
--
-- Every table of tenant data is keyed by tenant first: its primary key and every index lead
-- with `tenant`, and no query reads across tenants. So a tenant-sharded deployment (Citus with
-- `tenant` as the distribution column of every table, or tenants spread over several
-- primaries by a routing layer) takes this schema unchanged (docs/cluster.md).
--
-- Ids are `text COLLATE "C"`: they are ASCII ([A-Za-z0-9._:-]), compared bytewise (as the
-- embedded store and the list cursors order them), whatever the database's locale.
-- Instants are microseconds since the Unix epoch (`bigint`), as `Timestamp` holds them.
-- JSON that is written once and read back whole (events, attachments) is `text`: stored
-- verbatim, never parsed by the server.

-- Trigram indexes for the folder search (`?phone=` digits, `?q=` name text: "contains"), and
-- btree_gin so that those GIN indexes can lead with `tenant` too. Both are trusted extensions:
-- the database's owner may create them.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS btree_gin;

CREATE TABLE locations (
    tenant text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL,
    name text NOT NULL,
    PRIMARY KEY (tenant, id)
);

-- An SMS number belongs to one location of its tenant: the key makes two locations racing
-- for one number collide (the loser retries and answers 409).
CREATE TABLE location_numbers (
    tenant text COLLATE "C" NOT NULL,
    number text COLLATE "C" NOT NULL,
    location_id text COLLATE "C" NOT NULL,
    position int NOT NULL,
    PRIMARY KEY (tenant, number)
);
CREATE INDEX location_numbers_by_location ON location_numbers (tenant, location_id);

CREATE TABLE users (
    tenant text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL,
    name text NOT NULL,
    PRIMARY KEY (tenant, id)
);

CREATE TABLE folders (
    tenant text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL,
    name text NOT NULL,
    location_id text COLLATE "C" NOT NULL,
    sales_resource_id text COLLATE "C",
    service_resource_id text COLLATE "C",
    PRIMARY KEY (tenant, id)
);
-- The resource drop-down (folders in the caller's locations).
CREATE INDEX folders_by_location ON folders (tenant, location_id);
-- A user's "mine" view and resource view start from the folders they are a resource of.
CREATE INDEX folders_by_sales ON folders (tenant, sales_resource_id) WHERE sales_resource_id IS NOT NULL;
CREATE INDEX folders_by_service ON folders (tenant, service_resource_id) WHERE service_resource_id IS NOT NULL;
-- `GET /folders?q=TEXT`: names containing TEXT, case-insensitively.
CREATE INDEX folders_by_name ON folders USING gin (tenant, name gin_trgm_ops);

CREATE TABLE folder_numbers (
    tenant text COLLATE "C" NOT NULL,
    folder_id text COLLATE "C" NOT NULL,
    number text COLLATE "C" NOT NULL,
    position int NOT NULL,
    PRIMARY KEY (tenant, folder_id, number)
);
-- Auto-assignment: the folders listing a customer's number exactly.
CREATE INDEX folder_numbers_by_number ON folder_numbers (tenant, number);
-- `GET /folders?phone=DIGITS`: numbers containing the digits.
CREATE INDEX folder_numbers_by_digits ON folder_numbers USING gin (tenant, number gin_trgm_ops);

-- One row per tenant once it has a location (upsert_location creates it with the defaults):
-- every write that routes events by the preferences locks it FOR SHARE, and a change of the
-- preferences FOR UPDATE, so the two never interleave (src/store/postgres/ops.rs).
CREATE TABLE preferences (
    tenant text COLLATE "C" NOT NULL PRIMARY KEY,
    notify_sales boolean NOT NULL,
    notify_service boolean NOT NULL
);

CREATE TABLE subscriptions (
    tenant text COLLATE "C" NOT NULL,
    user_id text COLLATE "C" NOT NULL,
    subscribe_all boolean NOT NULL,
    PRIMARY KEY (tenant, user_id)
);

CREATE TABLE threads (
    tenant text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL,
    location_id text COLLATE "C" NOT NULL,
    customer_number text COLLATE "C" NOT NULL,
    folder_id text COLLATE "C",
    unread_count int NOT NULL CHECK (unread_count >= 0),
    last_message_id text COLLATE "C" NOT NULL,
    last_message_at bigint NOT NULL,
    PRIMARY KEY (tenant, id)
);
-- One thread per customer number and location: two first messages racing to create it
-- collide here, and the loser retries onto the winner's thread.
CREATE UNIQUE INDEX threads_by_key ON threads (tenant, location_id, customer_number);
-- Thread lists, newest first, per location (a subscribe-all viewer's "mine").
CREATE INDEX threads_by_location ON threads (tenant, location_id, last_message_at DESC, id DESC);
-- The same for unread threads only: `unread_only=true` lists and the unread counts of
-- subscribe-all users read this small index alone (index-only with the count included).
CREATE INDEX threads_unread_by_location ON threads (tenant, location_id, last_message_at DESC, id DESC)
    INCLUDE (unread_count) WHERE unread_count > 0;
-- A folder's threads, newest first: resource views and non-subscribe-all "mine" lists and
-- counts (through the folders a user is a resource of), a folder's messages, and whether a
-- folder has unread threads.
CREATE INDEX threads_by_folder ON threads (tenant, folder_id, last_message_at DESC, id DESC)
    INCLUDE (location_id, unread_count) WHERE folder_id IS NOT NULL;

-- `seq` orders messages of the same instant (the message list's cursor holds it); unique
-- across the table, so unique within a tenant.
CREATE TABLE messages (
    tenant text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    thread_id text COLLATE "C" NOT NULL,
    direction text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    body text NOT NULL,
    -- [{"id", "url", "content_type"}], in order.
    attachments text NOT NULL,
    created_at bigint NOT NULL,
    author_id text COLLATE "C",
    external_id text,
    PRIMARY KEY (tenant, id)
);
-- Ingestion is idempotent by external_id: the same id posted twice at once collides here and
-- the loser retries into the winner's answer. (Replies have none; NULLs never collide.)
CREATE UNIQUE INDEX messages_by_external_id ON messages (tenant, external_id);
-- A thread's messages, newest first from a cursor.
CREATE INDEX messages_by_thread ON messages (tenant, thread_id, created_at DESC, seq DESC);

CREATE TABLE photos (
    tenant text COLLATE "C" NOT NULL,
    folder_id text COLLATE "C" NOT NULL,
    attachment_id text COLLATE "C" NOT NULL,
    message_id text COLLATE "C" NOT NULL,
    url text NOT NULL,
    linked_by text COLLATE "C" NOT NULL,
    linked_at bigint NOT NULL,
    PRIMARY KEY (tenant, folder_id, attachment_id)
);

-- The event log. `event_heads.head` is the tenant's newest event id: a write appends its
-- events with `UPDATE … SET head = head + n RETURNING head`, which holds the row's lock until
-- COMMIT, so ids are gap-free and in commit order per tenant. Events are trimmed to
-- `events.retention` per tenant, a batch at a time (src/store/postgres/log.rs).
CREATE TABLE event_heads (
    tenant text COLLATE "C" NOT NULL PRIMARY KEY,
    head bigint NOT NULL
);

CREATE TABLE events (
    tenant text COLLATE "C" NOT NULL,
    id bigint NOT NULL,
    kind text NOT NULL,
    -- JSON: the event's `Route` and its frame's `data`.
    route text NOT NULL,
    data text NOT NULL,
    PRIMARY KEY (tenant, id)
);

-- Keys of the deployment, not of a tenant (under Citus: a reference table). `cursor` signs
-- the list cursors; the first node to start creates it.
CREATE TABLE deployment_keys (
    name text NOT NULL PRIMARY KEY,
    key bytea NOT NULL CHECK (length(key) = 32)
);
