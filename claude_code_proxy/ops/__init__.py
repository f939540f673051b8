"""Operations: health, metrics, the usage ledger and dashboard, doctor."""
