-- 004: an Idempotency-Key names an operation of one service: the same key
-- used for another service starts that service's own operation.
ALTER TABLE meridian.operations DROP CONSTRAINT operations_idempotency_key_key;
CREATE UNIQUE INDEX operations_service_idempotency_key
    ON meridian.operations (service, idempotency_key) WHERE idempotency_key IS NOT NULL;
