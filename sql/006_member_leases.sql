-- 006: the peer leases of a writable primary, as its agent reports them.
-- leases_required: node names of the peers whose leases keep it writable
-- without a recorded contact (the last set it reported while a writable
-- primary: a report without one keeps it); leases_held: those it held a
-- valid lease from at its last report (null when not a writable primary).
-- The leader never promotes automatically a member that the current
-- primary's leases_required leaves out.
ALTER TABLE meridian.members ADD COLUMN leases_required jsonb, ADD COLUMN leases_held jsonb;
