-- The embedded store's schema. Every row carries its tenant; nothing crosses tenants.
CREATE TABLE IF NOT EXISTS locations (
    tenant TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL,
    PRIMARY KEY (tenant, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS location_numbers (
    tenant TEXT NOT NULL, number TEXT NOT NULL, location_id TEXT NOT NULL, position INTEGER NOT NULL,
    PRIMARY KEY (tenant, number)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS location_numbers_by_location ON location_numbers (tenant, location_id);
CREATE TABLE IF NOT EXISTS users (
    tenant TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL,
    PRIMARY KEY (tenant, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS folders (
    tenant TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, location_id TEXT NOT NULL,
    sales_resource_id TEXT, service_resource_id TEXT,
    PRIMARY KEY (tenant, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS folders_by_location ON folders (tenant, location_id);
CREATE TABLE IF NOT EXISTS folder_numbers (
    tenant TEXT NOT NULL, folder_id TEXT NOT NULL, number TEXT NOT NULL, position INTEGER NOT NULL,
    PRIMARY KEY (tenant, folder_id, number)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS folder_numbers_by_number ON folder_numbers (tenant, number);
CREATE TABLE IF NOT EXISTS preferences (
    tenant TEXT PRIMARY KEY, notify_sales INTEGER NOT NULL, notify_service INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscriptions (
    tenant TEXT NOT NULL, user_id TEXT NOT NULL, subscribe_all INTEGER NOT NULL,
    PRIMARY KEY (tenant, user_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS threads (
    tenant TEXT NOT NULL, id TEXT NOT NULL, location_id TEXT NOT NULL, customer_number TEXT NOT NULL,
    folder_id TEXT, unread_count INTEGER NOT NULL, last_message_id TEXT NOT NULL, last_message_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, id)) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS threads_by_key ON threads (tenant, location_id, customer_number);
CREATE INDEX IF NOT EXISTS threads_by_recency ON threads (tenant, last_message_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS threads_by_folder ON threads (tenant, folder_id);
CREATE INDEX IF NOT EXISTS threads_unread ON threads (tenant, unread_count) WHERE unread_count > 0;
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY, tenant TEXT NOT NULL, id TEXT NOT NULL, thread_id TEXT NOT NULL,
    direction TEXT NOT NULL, body TEXT NOT NULL, created_at INTEGER NOT NULL,
    author_id TEXT, external_id TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_id ON messages (tenant, id);
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_external_id ON messages (tenant, external_id);
CREATE INDEX IF NOT EXISTS messages_by_thread ON messages (tenant, thread_id, created_at, seq);
CREATE TABLE IF NOT EXISTS attachments (
    tenant TEXT NOT NULL, id TEXT NOT NULL, message_id TEXT NOT NULL, position INTEGER NOT NULL,
    url TEXT NOT NULL, content_type TEXT NOT NULL,
    PRIMARY KEY (tenant, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS attachments_by_message ON attachments (tenant, message_id, position);
CREATE TABLE IF NOT EXISTS photos (
    tenant TEXT NOT NULL, folder_id TEXT NOT NULL, attachment_id TEXT NOT NULL, message_id TEXT NOT NULL,
    url TEXT NOT NULL, linked_by TEXT NOT NULL, linked_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, folder_id, attachment_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS event_heads (
    tenant TEXT PRIMARY KEY, head INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    tenant TEXT NOT NULL, id INTEGER NOT NULL, kind TEXT NOT NULL, route TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (tenant, id)) WITHOUT ROWID;
-- Keys of the deployment, not of a tenant: `cursor` signs list cursors (created once, on first start).
CREATE TABLE IF NOT EXISTS deployment_keys (
    name TEXT PRIMARY KEY, key BLOB NOT NULL) WITHOUT ROWID;
