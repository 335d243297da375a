-- Platform metadata: who runs what. Market data lives in ClickHouse, not here.
CREATE TABLE IF NOT EXISTS users (
    user_id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email       TEXT NOT NULL UNIQUE CHECK (position('@' IN email) > 1),
    name        TEXT NOT NULL,
    role        TEXT NOT NULL DEFAULT 'researcher'
                CHECK (role IN ('admin', 'researcher', 'trader', 'viewer')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS strategies (
    strategy_id TEXT PRIMARY KEY CHECK (strategy_id ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$'),
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    owner_id    BIGINT REFERENCES users (user_id),
    params      JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS artifacts (
    artifact_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    strategy_id TEXT NOT NULL REFERENCES strategies (strategy_id),
    kind        TEXT NOT NULL CHECK (kind IN ('model', 'backtest', 'report', 'dataset')),
    uri         TEXT NOT NULL,
    sha256      TEXT NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    metadata    JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (strategy_id, uri)
);

CREATE TABLE IF NOT EXISTS deployments (
    deployment_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    strategy_id   TEXT NOT NULL REFERENCES strategies (strategy_id),
    artifact_id   BIGINT REFERENCES artifacts (artifact_id),
    mode          TEXT NOT NULL CHECK (mode IN ('backtest', 'paper', 'live')),
    status        TEXT NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'running', 'stopped', 'failed')),
    started_at    TIMESTAMPTZ,
    stopped_at    TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (stopped_at IS NULL OR started_at IS NULL OR stopped_at >= started_at)
);

CREATE INDEX IF NOT EXISTS deployments_strategy_idx ON deployments (strategy_id, created_at DESC);
