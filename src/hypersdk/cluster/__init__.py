"""Several daemons (nodes) sharing one database: identity, leases, takeover and events across nodes."""
