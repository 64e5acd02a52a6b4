-- Run by `cdrflow migrate` before any migration: the database and the record of which
-- migrations are applied.
CREATE DATABASE IF NOT EXISTS cdrflow;

CREATE TABLE IF NOT EXISTS cdrflow.schema_migrations
(
    version UInt32,
    name String,
    applied_at DateTime
)
ENGINE = MergeTree
ORDER BY version;
