-- One row per run. Times are microseconds since the Unix epoch (BIGINT), so the one schema reads
-- the same in SQLite and PostgreSQL. param_values holds the parameter values, one per line, for
-- the q filter.
CREATE TABLE runs (
    run_id                TEXT PRIMARY KEY,
    run_key               TEXT NOT NULL,
    type                  TEXT NOT NULL,
    chain                 TEXT NOT NULL,
    task                  TEXT NOT NULL,
    params                TEXT NOT NULL,
    param_values          TEXT NOT NULL,
    status                TEXT NOT NULL,
    triggered_by          TEXT NOT NULL,
    submitted_at          BIGINT NOT NULL,
    started_at            BIGINT,
    finished_at           BIGINT,
    duration_ms           BIGINT NOT NULL DEFAULT 0,
    error                 TEXT NOT NULL DEFAULT '',
    cost_usd              DOUBLE PRECISION NOT NULL DEFAULT 0,
    tasks_total           INTEGER NOT NULL DEFAULT 0,
    tasks_pending         INTEGER NOT NULL DEFAULT 0,
    tasks_running         INTEGER NOT NULL DEFAULT 0,
    tasks_done            INTEGER NOT NULL DEFAULT 0,
    tasks_failed          INTEGER NOT NULL DEFAULT 0,
    tasks_cancelled       INTEGER NOT NULL DEFAULT 0,
    tasks_upstream_failed INTEGER NOT NULL DEFAULT 0,
    tasks_cached          INTEGER NOT NULL DEFAULT 0,
    hits                  BIGINT NOT NULL DEFAULT 0,
    progress              DOUBLE PRECISION NOT NULL DEFAULT 0,
    status_line           TEXT NOT NULL DEFAULT '',
    updated_at            BIGINT NOT NULL
);

-- Every list is newest first, then by run id; each filter the UI offers has an index that
-- ends in that order, so a page is an index range scan whatever the history's size.
CREATE INDEX runs_by_time ON runs (submitted_at DESC, run_id DESC);
CREATE INDEX runs_by_key ON runs (run_key, submitted_at DESC, run_id DESC);
CREATE INDEX runs_by_status ON runs (status, submitted_at DESC, run_id DESC);
CREATE INDEX runs_by_task ON runs (type, chain, task, submitted_at DESC, run_id DESC);
