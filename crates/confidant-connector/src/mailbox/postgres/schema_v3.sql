-- Confidant connector, PostgreSQL schema version 3: joins that can be
-- repeated.
--
-- A token keeps who used it (joiner) and the connection that made
-- (joined_connection), so that a join repeated by the same joiner (its
-- answer was lost, the instance that committed it died, and the client
-- asks another) answers the same connection and changes nothing, while
-- anyone else is still refused. A token used before this version has
-- neither, and a repeated join with it is refused as before.
ALTER TABLE tokens
    ADD COLUMN joiner bytea CHECK (octet_length(joiner) = 32),
    ADD COLUMN joined_connection text,
    ADD CHECK ((joiner IS NULL) = (joined_connection IS NULL)),
    ADD CHECK (used OR joiner IS NULL);

-- Answers `code` ('ok', 'repeated' or a refusal: 'nonce_replayed',
-- 'nonce_expired', 'unknown_token', 'token_used', 'own_token'), the
-- connection (the new one, or the one the first join made) and the
-- token's creator.
CREATE FUNCTION confidant_join(p_party bytea, p_nonce bytea, p_expires bigint, p_now bigint,
    p_token text, p_connection text, OUT code text, OUT connection text, OUT party bytea)
LANGUAGE plpgsql AS $$
DECLARE
    token_row tokens%ROWTYPE;
BEGIN
    code := confidant_take_nonce(p_party, p_nonce, p_expires, p_now);
    IF code <> 'ok' THEN RETURN; END IF;
    -- The token is used once: of two concurrent uses, the second waits for
    -- the first's row lock and then finds it used (and by whom).
    UPDATE tokens SET used = true, joiner = p_party, joined_connection = p_connection
        WHERE token = p_token AND NOT used AND creator <> p_party
        RETURNING creator INTO party;
    IF NOT FOUND THEN
        SELECT * INTO token_row FROM tokens WHERE token = p_token;
        IF NOT FOUND THEN
            code := 'unknown_token';
        ELSIF token_row.used AND token_row.joiner = p_party THEN
            code := 'repeated';
            connection := token_row.joined_connection;
            party := token_row.creator;
        ELSIF token_row.used THEN
            code := 'token_used';
        ELSE
            code := 'own_token';
        END IF;
        RETURN;
    END IF;
    INSERT INTO connections (connection_id, first_party, second_party)
        VALUES (p_connection, party, p_party);
    PERFORM confidant_store_message(party, p_connection, p_now, 1::smallint, NULL, p_token,
        p_party, NULL);
    connection := p_connection;
END $$;

-- The version 1 function, still called by instances of an older build
-- while they are replaced: it now records the joiner too, and answers a
-- repeated join as it always did ('token_used'), since such an instance
-- would answer the connection id it proposed rather than the stored one.
CREATE OR REPLACE FUNCTION confidant_use_token(p_party bytea, p_nonce bytea, p_expires bigint,
    p_now bigint, p_token text, p_connection text, OUT code text, OUT id bigint, OUT party bytea)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT j.code, j.party INTO code, party
        FROM confidant_join(p_party, p_nonce, p_expires, p_now, p_token, p_connection) AS j;
    IF code = 'repeated' THEN
        code := 'token_used';
        party := NULL;
    END IF;
END $$;
