"""The JSONL ledger: its records, the append-only writer, replay into a resume state,
the compact ID store replay fills, and the report `orchestrator report` prints."""
