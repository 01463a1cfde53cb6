-- Agent profiles: named, non-secret agent settings (JSON) that tasks reference by name.
CREATE TABLE profiles (
    name       TEXT PRIMARY KEY,
    settings   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
