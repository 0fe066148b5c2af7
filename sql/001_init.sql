-- 001: the leader lease and the append-only event log.
-- Applied inside one transaction by meridian-controller migrate.

CREATE TABLE meridian.lease (
    id            int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    holder        text,
    holder_region text,
    holder_url    text,
    term          bigint NOT NULL DEFAULT 0,
    acquired_at   timestamptz,
    renewed_at    timestamptz,
    expires_at    timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO meridian.lease (id) VALUES (1);

-- Take or renew the lease with the store's clock. A holder renews (same
-- term) only while its lease is still valid and it knows the current term;
-- anything else that succeeds starts a new tenure with term + 1. Returns the
-- lease row as it is afterwards and whether p_holder holds it.
CREATE FUNCTION meridian.lease_acquire(p_holder text, p_region text, p_url text,
                                       p_ttl_ms int, p_my_term bigint)
RETURNS TABLE (held boolean, term bigint, holder text, holder_region text, holder_url text,
               expires_in_ms bigint)
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE meridian.lease l
       SET term = CASE WHEN l.holder = p_holder AND l.term = p_my_term AND l.expires_at > now()
                       THEN l.term ELSE l.term + 1 END,
           acquired_at = CASE WHEN l.holder = p_holder AND l.term = p_my_term
                                   AND l.expires_at > now()
                              THEN l.acquired_at ELSE now() END,
           holder = p_holder, holder_region = p_region, holder_url = p_url,
           renewed_at = now(),
           expires_at = now() + make_interval(secs => p_ttl_ms / 1000.0)
     WHERE l.id = 1
       AND (l.holder IS NULL OR l.holder = p_holder OR l.expires_at < now());
    RETURN QUERY
        SELECT l.holder = p_holder AND l.expires_at > now(), l.term, l.holder, l.holder_region,
               l.holder_url,
               GREATEST(0, (extract(epoch FROM (l.expires_at - now())) * 1000)::bigint)
          FROM meridian.lease l WHERE l.id = 1;
END $$;

-- Gives the lease up at once (graceful stop), if p_holder holds p_term.
CREATE FUNCTION meridian.lease_release(p_holder text, p_term bigint) RETURNS boolean
LANGUAGE sql AS $$
    UPDATE meridian.lease SET expires_at = now() - interval '1 millisecond'
     WHERE id = 1 AND holder = p_holder AND term = p_term AND expires_at > now()
    RETURNING true;
$$;

-- The guard of every deciding write: true only for the current holder, in
-- its term, before expiry. It locks the lease row (FOR SHARE) so that a
-- concurrent take-over waits for the guarded transaction to end.
CREATE FUNCTION meridian.is_leader(p_holder text, p_term bigint) RETURNS boolean
LANGUAGE sql AS $$
    SELECT coalesce((SELECT true FROM meridian.lease
                      WHERE id = 1 AND holder = p_holder AND term = p_term
                        AND expires_at > now() FOR SHARE), false);
$$;

CREATE TABLE meridian.events (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    kind       text NOT NULL,
    service    text,
    actor      text NOT NULL,
    term       bigint,
    message    text NOT NULL,
    detail     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX events_service_id ON meridian.events (service, id);

-- The event log is append-only: no update, no delete.
CREATE FUNCTION meridian.events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'meridian.events is append-only';
END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON meridian.events
    FOR EACH ROW EXECUTE FUNCTION meridian.events_append_only();
