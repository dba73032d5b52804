-- Keystone's [security_compliance] password rules: the hashes of a user's
-- previous passwords (unique_last_password_count), and whether the current
-- password was set by the user (minimum_password_age applies only then).
CREATE TABLE password_history (
    user_id TEXT NOT NULL REFERENCES identity_user(id) ON DELETE CASCADE,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, password_hash)
);
CREATE INDEX password_history_user ON password_history(user_id, created_at);

ALTER TABLE identity_user ADD COLUMN password_self_service BOOLEAN NOT NULL DEFAULT FALSE;
