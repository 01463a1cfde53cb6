-- Agent profiles: named, non-secret agent settings (JSON) that tasks reference by name.
CREATE TABLE profiles (
    name       TEXT PRIMARY KEY,
    settings   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
