-- Revocable tokens (issue 12). Numbered 0012 so that migrations added by
-- other parts of that issue (0003…) cannot take the same version.

-- Key rotation: a key stops verifying at retire_at (ms since the epoch);
-- NULL while it is current.
ALTER TABLE signing_keys ADD COLUMN retire_at BIGINT;

-- Sign-outs: a session id (a token's `jti`) refused until the token would
-- have expired anyway, then deleted.
CREATE TABLE revoked_sessions (
    session    TEXT   PRIMARY KEY,
    user_id    BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX revoked_sessions_expiry ON revoked_sessions (expires_at);
