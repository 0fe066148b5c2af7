-- 002: regions, services and their topology, nodes and members as agents
-- report them, commands for agents, operations and their steps.

CREATE TABLE meridian.regions (
    name     text PRIMARY KEY,
    priority int NOT NULL
);

-- One row per service: where its primary is, in which epoch. The epoch is
-- the fencing token: it only grows, by one at every cutover.
CREATE TABLE meridian.services (
    name               text PRIMARY KEY,
    config             jsonb NOT NULL DEFAULT '{}',
    primary_region     text NOT NULL,
    primary_member     text,
    epoch              bigint NOT NULL DEFAULT 1,
    maintenance        boolean NOT NULL DEFAULT false,
    maintenance_reason text,
    last_failover_at   timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE meridian.nodes (
    name       text PRIMARY KEY,
    region     text NOT NULL,
    seq        bigint NOT NULL DEFAULT 0,
    checks     jsonb NOT NULL DEFAULT '[]',
    probes     jsonb NOT NULL DEFAULT '[]',
    via        text,
    api_url    text,
    last_seen  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE meridian.members (
    service          text NOT NULL,
    name             text NOT NULL,
    node             text NOT NULL,
    region           text NOT NULL,
    role             text NOT NULL DEFAULT 'unknown',
    fenced           boolean NOT NULL DEFAULT false,
    healthy          boolean NOT NULL DEFAULT false,
    timeline         bigint NOT NULL DEFAULT 0,
    position         numeric(20) NOT NULL DEFAULT 0,
    receive_position numeric(20) NOT NULL DEFAULT 0,
    replay_position  numeric(20) NOT NULL DEFAULT 0,
    lag_bytes        numeric(20),
    lag_ms           bigint,
    replay_timestamp timestamptz,
    epoch_seen       bigint NOT NULL DEFAULT 0,
    last_seen        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, name)
);

CREATE TABLE meridian.operations (
    id              bigserial PRIMARY KEY,
    service         text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('switchover', 'failover')),
    step            text NOT NULL,
    outcome         text,
    from_region     text NOT NULL,
    to_region       text NOT NULL,
    epoch           bigint NOT NULL,
    actor           text NOT NULL,
    reason          text NOT NULL DEFAULT '',
    idempotency_key text UNIQUE,
    state           jsonb NOT NULL DEFAULT '{}',
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    term            bigint NOT NULL
);
-- At most one running operation per service.
CREATE UNIQUE INDEX operations_one_running ON meridian.operations (service)
    WHERE finished_at IS NULL;

CREATE TABLE meridian.operation_steps (
    operation_id bigint NOT NULL REFERENCES meridian.operations (id),
    step         text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    attempts     int NOT NULL DEFAULT 0,
    outcome      text,
    detail       text NOT NULL DEFAULT '',
    PRIMARY KEY (operation_id, step)
);

-- Commands for agents. The id is chosen by the operation state machine and
-- is the same when a step re-issues its command (insert ... on conflict do
-- nothing), so an agent executes each at most once.
CREATE TABLE meridian.commands (
    id           text PRIMARY KEY,
    service      text NOT NULL,
    member       text NOT NULL,
    node         text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('fence', 'unfence', 'promote', 'rejoin')),
    epoch        bigint NOT NULL,
    args         jsonb NOT NULL DEFAULT '{}',
    operation_id bigint REFERENCES meridian.operations (id),
    term         bigint NOT NULL,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'done', 'failed', 'refused', 'cancelled')),
    result       jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX commands_pending ON meridian.commands (node) WHERE status = 'pending';
