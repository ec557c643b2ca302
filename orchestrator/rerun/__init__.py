"""`orchestrator rerun`: where the IDs come from, the session that sends them, the error
budget that stops it, and the waiter behind `--wait`."""
