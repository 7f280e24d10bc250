-- Confidant connector, PostgreSQL schema version 1.
--
-- The guarantees live in constraints: a nonce is accepted once (primary
-- key on party and nonce), a token is used once (a conditional update), a
-- retried send is stored once (primary key on connection, sender and
-- client id), and a message goes only by its recipient's acknowledgement
-- or the revocation of its connection. Each operation is one function, so
-- that a request is one round trip and one transaction.

CREATE TABLE connector_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    audience text NOT NULL,
    -- A nonce that expired before this time (ms) is refused: it may have
    -- been pruned.
    nonces_pruned_before bigint NOT NULL DEFAULT 0
);

CREATE TABLE tokens (
    token text PRIMARY KEY,
    creator bytea NOT NULL CHECK (octet_length(creator) = 32),
    used boolean NOT NULL DEFAULT false,
    created_ms bigint NOT NULL
);

CREATE TABLE connections (
    connection_id text PRIMARY KEY,
    first_party bytea NOT NULL CHECK (octet_length(first_party) = 32),
    second_party bytea NOT NULL CHECK (octet_length(second_party) = 32),
    revoked boolean NOT NULL DEFAULT false
);

-- One row per recipient: the count of waiting messages. A send locks its
-- recipient's row, so one recipient's message ids commit in increasing
-- order (a stream reading "ids above my cursor" never skips one).
CREATE TABLE mailboxes (
    recipient bytea PRIMARY KEY CHECK (octet_length(recipient) = 32),
    pending bigint NOT NULL CHECK (pending >= 0)
);

CREATE SEQUENCE message_ids AS bigint START 1;

CREATE TABLE messages (
    recipient bytea NOT NULL,
    id bigint NOT NULL,
    connection_id text NOT NULL,
    received_ms bigint NOT NULL,
    -- 0 envelope, 1 connection added (token, peer), 2 connection revoked
    kind smallint NOT NULL CHECK (kind IN (0, 1, 2)),
    envelope bytea,
    token text,
    peer bytea,
    PRIMARY KEY (recipient, id),
    CHECK (kind <> 0 OR envelope IS NOT NULL),
    CHECK (kind <> 1 OR (token IS NOT NULL AND octet_length(peer) = 32))
);
CREATE INDEX messages_by_connection ON messages (connection_id);

CREATE TABLE client_message_ids (
    connection_id text NOT NULL,
    sender bytea NOT NULL,
    client_id bytea NOT NULL,
    message_id bigint,
    digest bytea NOT NULL CHECK (octet_length(digest) = 32),
    expires_ms bigint NOT NULL,
    PRIMARY KEY (connection_id, sender, client_id)
);
CREATE INDEX client_message_ids_by_expiry ON client_message_ids (expires_ms);

CREATE TABLE nonces (
    party bytea NOT NULL,
    nonce bytea NOT NULL,
    expires_ms bigint NOT NULL,
    PRIMARY KEY (party, nonce)
);
CREATE INDEX nonces_by_expiry ON nonces (expires_ms);

-- 'ok', or why the nonce is refused. Checked before the insert (cheap) and
-- again after it: a pruning that committed meanwhile is seen then, since
-- each statement of a function reads the latest committed state.
CREATE FUNCTION confidant_take_nonce(p_party bytea, p_nonce bytea, p_expires bigint, p_now bigint)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    pruned bigint;
BEGIN
    SELECT nonces_pruned_before INTO pruned FROM connector_state;
    IF p_expires < GREATEST(p_now, COALESCE(pruned, 0)) THEN
        RETURN 'nonce_expired';
    END IF;
    INSERT INTO nonces (party, nonce, expires_ms) VALUES (p_party, p_nonce, p_expires)
        ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'nonce_replayed';
    END IF;
    SELECT nonces_pruned_before INTO pruned FROM connector_state;
    IF p_expires < COALESCE(pruned, 0) THEN
        DELETE FROM nonces WHERE party = p_party AND nonce = p_nonce;
        RETURN 'nonce_expired';
    END IF;
    RETURN 'ok';
END $$;

-- Stores a message for p_recipient; NULL when p_limit (if not NULL)
-- messages wait already. The instance that called tells the listening
-- instances after the commit (a NOTIFY inside the write transaction would
-- serialise every commit on PostgreSQL's notification lock).
CREATE FUNCTION confidant_store_message(p_recipient bytea, p_connection text, p_now bigint,
    p_kind smallint, p_envelope bytea, p_token text, p_peer bytea, p_limit bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO mailboxes AS m (recipient, pending) VALUES (p_recipient, 1)
        ON CONFLICT (recipient) DO UPDATE SET pending = m.pending + 1
        WHERE p_limit IS NULL OR m.pending < p_limit;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    new_id := nextval('message_ids');
    INSERT INTO messages (recipient, id, connection_id, received_ms, kind, envelope, token, peer)
        VALUES (p_recipient, new_id, p_connection, p_now, p_kind, p_envelope, p_token, p_peer);
    RETURN new_id;
END $$;

CREATE FUNCTION confidant_use_nonce(p_party bytea, p_nonce bytea, p_expires bigint, p_now bigint,
    OUT code text, OUT id bigint, OUT party bytea)
LANGUAGE plpgsql AS $$
BEGIN
    code := confidant_take_nonce(p_party, p_nonce, p_expires, p_now);
END $$;

CREATE FUNCTION confidant_create_tokens(p_party bytea, p_nonce bytea, p_expires bigint, p_now bigint,
    p_tokens text[], OUT code text, OUT id bigint, OUT party bytea)
LANGUAGE plpgsql AS $$
BEGIN
    code := confidant_take_nonce(p_party, p_nonce, p_expires, p_now);
    IF code <> 'ok' THEN RETURN; END IF;
    INSERT INTO tokens (token, creator, created_ms)
        SELECT t, p_party, p_now FROM unnest(p_tokens) AS t
        ON CONFLICT (token) DO UPDATE SET creator = EXCLUDED.creator, used = false,
            created_ms = EXCLUDED.created_ms;
END $$;

CREATE FUNCTION confidant_use_token(p_party bytea, p_nonce bytea, p_expires bigint, p_now bigint,
    p_token text, p_connection text, OUT code text, OUT id bigint, OUT party bytea)
LANGUAGE plpgsql AS $$
DECLARE
    token_creator bytea;
    token_used boolean;
BEGIN
    code := confidant_take_nonce(p_party, p_nonce, p_expires, p_now);
    IF code <> 'ok' THEN RETURN; END IF;
    -- The token is used once: of two concurrent uses, the second waits for
    -- the first's row lock and then finds "used".
    UPDATE tokens SET used = true
        WHERE token = p_token AND NOT used AND creator <> p_party
        RETURNING creator INTO token_creator;
    IF NOT FOUND THEN
        SELECT creator, used INTO token_creator, token_used FROM tokens WHERE token = p_token;
        IF NOT FOUND THEN
            code := 'unknown_token';
        ELSIF token_used THEN
            code := 'token_used';
        ELSE
            code := 'own_token';
        END IF;
        RETURN;
    END IF;
    INSERT INTO connections (connection_id, first_party, second_party)
        VALUES (p_connection, token_creator, p_party);
    id := confidant_store_message(token_creator, p_connection, p_now, 1::smallint, NULL, p_token,
        p_party, NULL);
    party := token_creator;
END $$;

CREATE FUNCTION confidant_send(p_party bytea, p_nonce bytea, p_expires bigint, p_now bigint,
    p_connection text, p_envelope bytea, p_client_id bytea, p_digest bytea, p_client_expires bigint,
    p_limit bigint, OUT code text, OUT id bigint, OUT party bytea)
LANGUAGE plpgsql AS $$
DECLARE
    conn connections%ROWTYPE;
    recipient bytea;
    existing client_message_ids%ROWTYPE;
BEGIN
    code := confidant_take_nonce(p_party, p_nonce, p_expires, p_now);
    IF code <> 'ok' THEN RETURN; END IF;
    -- KEY SHARE: sends do not block each other, and a revocation waits for
    -- the sends in flight (and they for it).
    SELECT * INTO conn FROM connections WHERE connection_id = p_connection FOR KEY SHARE;
    IF NOT FOUND THEN
        code := 'unknown_connection'; RETURN;
    END IF;
    IF conn.first_party = p_party THEN
        recipient := conn.second_party;
    ELSIF conn.second_party = p_party THEN
        recipient := conn.first_party;
    ELSE
        code := 'not_a_party'; RETURN;
    END IF;
    IF conn.revoked THEN
        code := 'revoked'; RETURN;
    END IF;
    party := recipient;
    IF p_client_id IS NOT NULL THEN
        -- A concurrent send with the same key waits here for the first to
        -- commit, then finds its row.
        INSERT INTO client_message_ids (connection_id, sender, client_id, digest, expires_ms)
            VALUES (p_connection, p_party, p_client_id, p_digest, p_client_expires)
            ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            SELECT * INTO existing FROM client_message_ids
                WHERE connection_id = p_connection AND sender = p_party
                  AND client_id = p_client_id;
            IF existing.digest <> p_digest THEN
                code := 'client_id_reused'; RETURN;
            END IF;
            code := 'duplicate';
            id := existing.message_id;
            RETURN;
        END IF;
    END IF;
    id := confidant_store_message(recipient, p_connection, p_now, 0::smallint, p_envelope, NULL,
        NULL, p_limit);
    IF id IS NULL THEN
        IF p_client_id IS NOT NULL THEN
            DELETE FROM client_message_ids
                WHERE connection_id = p_connection AND sender = p_party
                  AND client_id = p_client_id;
        END IF;
        code := 'mailbox_full'; RETURN;
    END IF;
    IF p_client_id IS NOT NULL THEN
        UPDATE client_message_ids SET message_id = id
            WHERE connection_id = p_connection AND sender = p_party AND client_id = p_client_id;
    END IF;
END $$;

CREATE FUNCTION confidant_acknowledge(p_party bytea, p_nonce bytea, p_expires bigint, p_now bigint,
    p_ids bigint[], OUT code text, OUT id bigint, OUT party bytea)
LANGUAGE plpgsql AS $$
DECLARE
    deleted bigint;
BEGIN
    code := confidant_take_nonce(p_party, p_nonce, p_expires, p_now);
    IF code <> 'ok' THEN RETURN; END IF;
    DELETE FROM messages WHERE recipient = p_party AND messages.id = ANY (p_ids);
    GET DIAGNOSTICS deleted = ROW_COUNT;
    IF deleted > 0 THEN
        UPDATE mailboxes SET pending = GREATEST(pending - deleted, 0) WHERE recipient = p_party;
    END IF;
    id := deleted;
END $$;

CREATE FUNCTION confidant_revoke(p_party bytea, p_nonce bytea, p_expires bigint, p_now bigint,
    p_connection text, OUT code text, OUT id bigint, OUT party bytea)
LANGUAGE plpgsql AS $$
DECLARE
    conn connections%ROWTYPE;
    other bytea;
    each_party bytea;
    deleted bigint;
BEGIN
    code := confidant_take_nonce(p_party, p_nonce, p_expires, p_now);
    IF code <> 'ok' THEN RETURN; END IF;
    SELECT * INTO conn FROM connections WHERE connection_id = p_connection FOR UPDATE;
    IF NOT FOUND THEN
        code := 'unknown_connection'; RETURN;
    END IF;
    IF conn.first_party = p_party THEN
        other := conn.second_party;
    ELSIF conn.second_party = p_party THEN
        other := conn.first_party;
    ELSE
        code := 'not_a_party'; RETURN;
    END IF;
    party := other;
    IF conn.revoked THEN RETURN; END IF;
    UPDATE connections SET revoked = true WHERE connection_id = p_connection;
    -- Both mailboxes, in a fixed order (no deadlock between two revokes).
    FOREACH each_party IN ARRAY (SELECT array_agg(p ORDER BY p)
                                 FROM unnest(ARRAY[conn.first_party, conn.second_party]) AS p) LOOP
        DELETE FROM messages WHERE recipient = each_party AND connection_id = p_connection;
        GET DIAGNOSTICS deleted = ROW_COUNT;
        IF deleted > 0 THEN
            UPDATE mailboxes SET pending = GREATEST(pending - deleted, 0)
                WHERE recipient = each_party;
        END IF;
    END LOOP;
    id := confidant_store_message(other, p_connection, p_now, 2::smallint, NULL, NULL, NULL, NULL);
END $$;

-- Prunes expired nonces and client ids at p_now (ms), at most p_limit of
-- each; the pruning time moves first, so a pruned nonce is refused.
CREATE FUNCTION confidant_prune(p_now bigint, p_limit integer) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    pruned bigint;
    removed bigint;
    total bigint := 0;
BEGIN
    UPDATE connector_state SET nonces_pruned_before = GREATEST(nonces_pruned_before, p_now)
        RETURNING nonces_pruned_before INTO pruned;
    DELETE FROM nonces WHERE ctid IN
        (SELECT ctid FROM nonces WHERE expires_ms < pruned LIMIT p_limit);
    GET DIAGNOSTICS removed = ROW_COUNT;
    total := total + removed;
    DELETE FROM client_message_ids WHERE ctid IN
        (SELECT ctid FROM client_message_ids WHERE expires_ms < pruned LIMIT p_limit);
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN total + removed;
END $$;
