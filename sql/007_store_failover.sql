-- 007: a store that fails over must not hand out a leader term again.
-- When an asynchronous standby of the store is promoted without the last
-- transactions, the lease row can come back with a term below one a
-- controller already held or saw. The caller now passes the highest term
-- it has seen (p_min_term): a new tenure starts above both the row's term
-- and that one. A renewal (same holder, same term, still valid) keeps its
-- term. The five-argument form stays for controllers not yet upgraded.
CREATE FUNCTION meridian.lease_acquire(p_holder text, p_region text, p_url text,
                                       p_ttl_ms int, p_my_term bigint, p_min_term bigint)
RETURNS TABLE (held boolean, term bigint, holder text, holder_region text, holder_url text,
               expires_in_ms bigint)
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE meridian.lease l
       SET term = CASE WHEN l.holder = p_holder AND l.term = p_my_term AND l.expires_at > now()
                       THEN l.term ELSE GREATEST(l.term, p_min_term) + 1 END,
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
