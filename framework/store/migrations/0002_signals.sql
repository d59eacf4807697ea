-- 0002: signals received from outside the process (HTTP API), persisted on receipt, before anything acts.
-- The client-supplied id makes a retried webhook a duplicate, never a second order.

CREATE TABLE signals (
    id           text        PRIMARY KEY,                 -- client-supplied, unique
    source       text        NOT NULL,                    -- http | tradingview
    body         jsonb       NOT NULL,                    -- the validated Signal
    state        text        NOT NULL CHECK (state IN ('received', 'done', 'rejected', 'failed')),
    result       jsonb,                                   -- what happened (position, or the error)
    received_at  bigint      NOT NULL,                    -- ms since epoch, UTC
    updated_at   bigint      NOT NULL
);
