-- Confidant connector, PostgreSQL schema version 2: batch sends.
--
-- confidant_send_batch stores many envelopes of one sender in one round
-- trip and one transaction, under one nonce, each entry judged as
-- confidant_send judges one (in the entries' order, so that a later entry
-- sees what an earlier one stored). It takes its locks in confidant_send's
-- order, each kind in a fixed order of its own, so that no two writes wait
-- for each other in a circle:
--   1. the connections (FOR KEY SHARE), by connection id;
--   2. the client ids (the unique key of client_message_ids), by
--      connection id and client id;
--   3. the recipients' mailbox rows (FOR UPDATE), by recipient;
-- confidant_send takes one of each in that order, confidant_revoke one
-- connection and then the mailboxes by recipient. The mailbox rows are all
-- held before the first id is drawn, so one recipient's ids still commit
-- in increasing order, and the entries' ids increase in their order.
--
-- Answers `code` ('ok' or the nonce's refusal: then nothing is stored and
-- the arrays are NULL) and, per entry, its code ('ok', 'duplicate' or a
-- refusal as confidant_send names it), its message id and its recipient.
CREATE FUNCTION confidant_send_batch(p_party bytea, p_nonce bytea, p_expires bigint, p_now bigint,
    p_connections text[], p_envelopes bytea[], p_client_ids bytea[], p_digests bytea[],
    p_client_expires bigint, p_limit bigint,
    OUT code text, OUT codes text[], OUT ids bigint[], OUT parties bytea[])
LANGUAGE plpgsql AS $$
DECLARE
    n integer := COALESCE(array_length(p_connections, 1), 0);
    i integer;
    c integer;
    k integer;
    conn connections%ROWTYPE;
    found_row boolean;
    each_connection text;
    each_key record;
    each_recipient bytea;
    to_party bytea;
    new_id bigint;
    existing client_message_ids%ROWTYPE;
    -- Per distinct connection: its id, its recipient (when usable) and
    -- 'ok' or why it is refused.
    conn_ids text[] := '{}';
    conn_recipients bytea[] := '{}';
    conn_codes text[] := '{}';
    -- Per distinct client id key: its name (hex client id ':' connection),
    -- 'mine' (inserted by this call, no message yet) or 'stored', and the
    -- stored message's id and digest.
    key_names text[] := '{}';
    key_connections text[] := '{}';
    key_client_ids bytea[] := '{}';
    key_states text[] := '{}';
    key_message_ids bigint[] := '{}';
    key_digests bytea[] := '{}';
BEGIN
    code := confidant_take_nonce(p_party, p_nonce, p_expires, p_now);
    IF code <> 'ok' THEN RETURN; END IF;
    IF n = 0 THEN
        codes := '{}'; ids := '{}'; parties := '{}';
        RETURN;
    END IF;
    codes := array_fill(NULL::text, ARRAY[n]);
    ids := array_fill(NULL::bigint, ARRAY[n]);
    parties := array_fill(NULL::bytea, ARRAY[n]);

    -- 1. The connections.
    FOR each_connection IN SELECT DISTINCT e FROM unnest(p_connections) AS e ORDER BY e LOOP
        SELECT * INTO conn FROM connections
            WHERE connection_id = each_connection FOR KEY SHARE;
        found_row := FOUND;
        conn_ids := array_append(conn_ids, each_connection);
        IF NOT found_row THEN
            conn_recipients := array_append(conn_recipients, NULL::bytea);
            conn_codes := array_append(conn_codes, 'unknown_connection'::text);
        ELSIF conn.first_party <> p_party AND conn.second_party <> p_party THEN
            conn_recipients := array_append(conn_recipients, NULL::bytea);
            conn_codes := array_append(conn_codes, 'not_a_party'::text);
        ELSIF conn.revoked THEN
            conn_recipients := array_append(conn_recipients, NULL::bytea);
            conn_codes := array_append(conn_codes, 'revoked'::text);
        ELSIF conn.first_party = p_party THEN
            conn_recipients := array_append(conn_recipients, conn.second_party);
            conn_codes := array_append(conn_codes, 'ok'::text);
        ELSE
            conn_recipients := array_append(conn_recipients, conn.first_party);
            conn_codes := array_append(conn_codes, 'ok'::text);
        END IF;
    END LOOP;

    -- 2. The client ids of entries on usable connections; a key new here
    -- is inserted with the digest of its first entry (a concurrent send
    -- with the same key waits for this transaction, as in confidant_send).
    FOR each_key IN
        SELECT DISTINCT ON (e.connection, e.client_id) e.connection, e.client_id, e.digest
        FROM unnest(p_connections, p_client_ids, p_digests) WITH ORDINALITY
            AS e(connection, client_id, digest, place)
        WHERE e.client_id IS NOT NULL
          AND conn_codes[array_position(conn_ids, e.connection)] = 'ok'
        ORDER BY e.connection, e.client_id, e.place
    LOOP
        INSERT INTO client_message_ids (connection_id, sender, client_id, digest, expires_ms)
            VALUES (each_key.connection, p_party, each_key.client_id, each_key.digest,
                    p_client_expires)
            ON CONFLICT DO NOTHING;
        found_row := FOUND;
        key_names := array_append(key_names,
            encode(each_key.client_id, 'hex') || ':' || each_key.connection);
        key_connections := array_append(key_connections, each_key.connection);
        key_client_ids := array_append(key_client_ids, each_key.client_id);
        IF found_row THEN
            key_states := array_append(key_states, 'mine'::text);
            key_message_ids := array_append(key_message_ids, NULL::bigint);
            key_digests := array_append(key_digests, each_key.digest);
        ELSE
            SELECT * INTO existing FROM client_message_ids
                WHERE connection_id = each_key.connection AND sender = p_party
                  AND client_id = each_key.client_id;
            key_states := array_append(key_states, 'stored'::text);
            key_message_ids := array_append(key_message_ids, existing.message_id);
            key_digests := array_append(key_digests, existing.digest);
        END IF;
    END LOOP;

    -- 3. The recipients' mailbox rows.
    FOR each_recipient IN
        SELECT DISTINCT r FROM unnest(conn_recipients) AS r WHERE r IS NOT NULL ORDER BY r
    LOOP
        INSERT INTO mailboxes (recipient, pending) VALUES (each_recipient, 0)
            ON CONFLICT DO NOTHING;
        PERFORM 1 FROM mailboxes WHERE mailboxes.recipient = each_recipient FOR UPDATE;
    END LOOP;

    -- 4. The entries, in order.
    FOR i IN 1..n LOOP
        c := array_position(conn_ids, p_connections[i]);
        IF conn_codes[c] <> 'ok' THEN
            codes[i] := conn_codes[c];
            CONTINUE;
        END IF;
        to_party := conn_recipients[c];
        k := NULL;
        IF p_client_ids[i] IS NOT NULL THEN
            k := array_position(key_names,
                encode(p_client_ids[i], 'hex') || ':' || p_connections[i]);
            IF key_states[k] = 'stored' THEN
                parties[i] := to_party;
                IF key_digests[k] <> p_digests[i] THEN
                    codes[i] := 'client_id_reused';
                ELSE
                    codes[i] := 'duplicate';
                    ids[i] := key_message_ids[k];
                END IF;
                CONTINUE;
            END IF;
        END IF;
        new_id := confidant_store_message(to_party, p_connections[i], p_now, 0::smallint,
            p_envelopes[i], NULL, NULL, p_limit);
        IF new_id IS NULL THEN
            codes[i] := 'mailbox_full';
            CONTINUE;
        END IF;
        codes[i] := 'ok';
        ids[i] := new_id;
        parties[i] := to_party;
        IF k IS NOT NULL THEN
            UPDATE client_message_ids SET message_id = new_id, digest = p_digests[i]
                WHERE connection_id = p_connections[i] AND sender = p_party
                  AND client_id = p_client_ids[i];
            key_states[k] := 'stored';
            key_message_ids[k] := new_id;
            key_digests[k] := p_digests[i];
        END IF;
    END LOOP;

    -- A key inserted here that no entry stored a message under (its
    -- recipient's mailbox was full) is not kept, as in confidant_send.
    DELETE FROM client_message_ids AS m
        USING unnest(key_connections, key_client_ids, key_states) AS e(connection, client_id, state)
        WHERE e.state = 'mine' AND m.connection_id = e.connection AND m.sender = p_party
          AND m.client_id = e.client_id;
END $$;
