"""The token's shared schedule: the store contract, its SQLite and Redis stores, and this
process's side of it (`schedule`)."""
