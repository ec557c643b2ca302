"""`make bench`: the orchestrator's overhead measured against a bare client, on loopback.

Module map: `bench` (the runner and the table), `servers` (the simulator and a canned
static server, each in a process of its own), `bare_client` (the bare aiohttp loop),
`workload` (ID files and a synthetic ledger), `procs` (child processes: wall time, peak
RSS, CPU), `idstore_bench` (bytes per ID and ops/s of `orchestrator.ledger.idstore`).
"""
