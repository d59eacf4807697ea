-- 0003: one owner per (venue, account): a lease row renewed by heartbeat, and fencing by epoch.
-- The database's clock decides expiry (now()), so instances on several machines never compare clocks.
-- Every write of the engine carries the epoch of the lease it holds; a write with another epoch is refused
-- here, whatever the instance believes (a paused-then-resumed old owner must not write: fencing).

CREATE TABLE leases (
    venue       text        NOT NULL,
    account     text        NOT NULL,
    owner       text        NOT NULL,             -- instance id: host, pid and a random part
    epoch       bigint      NOT NULL CHECK (epoch > 0),  -- +1 at every change of owner
    expires_at  timestamptz NOT NULL,
    acquired_at timestamptz NOT NULL,
    renewed_at  timestamptz NOT NULL,
    PRIMARY KEY (venue, account)
);

ALTER TABLE positions ADD COLUMN epoch bigint;
ALTER TABLE orders ADD COLUMN epoch bigint;
ALTER TABLE stops ADD COLUMN epoch bigint;
ALTER TABLE events ADD COLUMN epoch bigint;

-- A row of a leased (venue, account) must carry the lease's current epoch.  FOR SHARE: a takeover (which
-- updates the lease row) waits for writes in flight and every later write sees the new epoch, so no write
-- of the old owner commits after the takeover.  An account nobody leases (tools, tests) is not fenced.
CREATE FUNCTION lease_fence() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    current_epoch bigint;
BEGIN
    SELECT l.epoch INTO current_epoch FROM leases l
     WHERE l.venue = NEW.venue AND l.account = NEW.account FOR SHARE;
    IF FOUND AND NEW.epoch IS DISTINCT FROM current_epoch THEN
        RAISE EXCEPTION 'stale lease epoch % for % %: the lease is at epoch %',
            NEW.epoch, NEW.venue, NEW.account, current_epoch
            USING ERRCODE = 'FW409';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER positions_fence BEFORE INSERT OR UPDATE ON positions FOR EACH ROW EXECUTE FUNCTION lease_fence();
CREATE TRIGGER orders_fence BEFORE INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION lease_fence();
CREATE TRIGGER stops_fence BEFORE INSERT OR UPDATE ON stops FOR EACH ROW EXECUTE FUNCTION lease_fence();
CREATE TRIGGER events_fence BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION lease_fence();
