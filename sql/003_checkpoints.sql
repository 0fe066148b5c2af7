-- 003: data-sync checkpoints between regions (controller/checkpoint*.c).
-- A checkpoint is a position of a service's primary, recorded with its epoch
-- and timeline; checkpoint_reached says when (store clock) each region's
-- replay reached it. Rows are written by the leader (marks, lost, auto
-- checkpoints, retention) and by any controller for on-demand checkpoints
-- with a client-supplied position.

CREATE TABLE meridian.checkpoints (
    id                bigserial PRIMARY KEY,
    service           text NOT NULL,
    epoch             bigint NOT NULL,
    timeline          bigint NOT NULL DEFAULT 0,     -- the primary's; 0: unknown
    position          numeric(20) NOT NULL,
    -- store time of the primary's report that carried the position: all data
    -- written before it is at or below position. NULL when unknown (a
    -- client-supplied position): such a checkpoint is no recovery point.
    position_at       timestamptz,
    kind              text NOT NULL CHECK (kind IN ('auto', 'manual', 'barrier')),
    actor             text NOT NULL,
    primary_region    text NOT NULL,
    operation_id      bigint,
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- every region of the service reached it, or it is lost: nothing to watch
    complete          boolean NOT NULL DEFAULT false,
    lost              boolean NOT NULL DEFAULT false,
    lost_at           timestamptz,
    lost_operation_id bigint
);
CREATE INDEX checkpoints_pending ON meridian.checkpoints (service, id) WHERE NOT complete;
CREATE INDEX checkpoints_service_id ON meridian.checkpoints (service, id);
CREATE INDEX checkpoints_created ON meridian.checkpoints (created_at);
-- One barrier per operation: recording it again is a no-op.
CREATE UNIQUE INDEX checkpoints_one_barrier ON meridian.checkpoints (operation_id)
    WHERE kind = 'barrier';

CREATE TABLE meridian.checkpoint_reached (
    checkpoint_id bigint NOT NULL REFERENCES meridian.checkpoints (id) ON DELETE CASCADE,
    service       text NOT NULL,
    region        text NOT NULL,
    reached_at    timestamptz NOT NULL,
    PRIMARY KEY (checkpoint_id, region)
);
-- The newest checkpoint a region reached (its recovery point).
CREATE INDEX checkpoint_reached_region ON meridian.checkpoint_reached
    (service, region, checkpoint_id DESC);
