"""The database behind the ledger, the named keys and the limit counters."""
