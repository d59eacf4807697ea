-- 0001: positions, orders (intent before submit), stops, append-only event journal.
-- Every row carries account and venue so several instances can share one database later.

CREATE TABLE positions (
    id                    bigserial PRIMARY KEY,
    account               text        NOT NULL,
    venue                 text        NOT NULL,
    symbol                text        NOT NULL,
    side                  text        NOT NULL CHECK (side IN ('long', 'short')),
    contracts             numeric     NOT NULL CHECK (contracts >= 0),
    entry_price           numeric,
    stop_loss             numeric,
    take_profit           numeric,
    trailing_spec         jsonb,              -- TrailingSpec as JSON
    status                text        NOT NULL CHECK (status IN ('open', 'closed')),
    source                text        NOT NULL,            -- engine | adopted
    entry_client_order_id text,
    opened_at             bigint      NOT NULL,            -- ms since epoch, UTC
    updated_at            bigint      NOT NULL,
    closed_at             bigint,
    close_reason          text,
    close_price           numeric,
    realized_pnl          numeric,
    CHECK ((status = 'closed') = (closed_at IS NOT NULL))
);
-- Two open positions for one account/venue/symbol are impossible (one-way mode).
CREATE UNIQUE INDEX positions_one_open ON positions (account, venue, symbol) WHERE status = 'open';

CREATE TABLE orders (
    id               bigserial PRIMARY KEY,
    account          text    NOT NULL,
    venue            text    NOT NULL,
    symbol           text    NOT NULL,
    client_order_id  text    NOT NULL,
    venue_order_id   text,
    purpose          text    NOT NULL CHECK (purpose IN ('entry', 'close', 'rollback')),
    side             text    NOT NULL CHECK (side IN ('buy', 'sell')),
    contracts        numeric NOT NULL CHECK (contracts > 0),
    reduce_only      boolean NOT NULL,
    -- intent: written before submit; submitted: sent, no answer yet; unknown: timeout after send.
    state            text    NOT NULL CHECK (state IN ('intent', 'submitted', 'unknown', 'open', 'closed',
                                                       'canceled', 'rejected', 'expired')),
    filled           numeric NOT NULL DEFAULT 0,
    average          numeric,
    intent           jsonb   NOT NULL,
    created_at       bigint  NOT NULL,
    updated_at       bigint  NOT NULL,
    UNIQUE (account, venue, client_order_id)
);
CREATE INDEX orders_unresolved ON orders (account, venue) WHERE state IN ('intent', 'submitted', 'unknown');

CREATE TABLE stops (
    id             bigserial PRIMARY KEY,
    account        text    NOT NULL,
    venue          text    NOT NULL,
    symbol         text    NOT NULL,
    position_id    bigint  REFERENCES positions (id),
    kind           text    NOT NULL CHECK (kind IN ('stop_loss', 'take_profit', 'trailing_stop')),
    trigger_price  numeric NOT NULL,
    venue_order_id text,
    status         text    NOT NULL CHECK (status IN ('resting', 'replaced', 'cancelled', 'triggered', 'gone')),
    placed_at      bigint  NOT NULL,
    ended_at       bigint
);
CREATE INDEX stops_resting ON stops (account, venue, symbol) WHERE status = 'resting';

-- Append-only journal: every lifecycle event, in order.
CREATE TABLE events (
    id          bigserial PRIMARY KEY,
    account     text   NOT NULL,
    venue       text   NOT NULL,
    symbol      text,
    position_id bigint REFERENCES positions (id),
    kind        text   NOT NULL,
    payload     jsonb  NOT NULL,
    at          bigint NOT NULL
);
CREATE INDEX events_position ON events (position_id);

CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();
