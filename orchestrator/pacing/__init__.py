"""When a request may leave: the clock seam, the token bucket, the adaptive rate (its
decisions in `adaptive`, what it knows in `rate_state`, and its parts: the window, the
ramp, the throughput, sharing a stated limit), the opening burst and the batches after
it, the circuit, the pacer that puts them together (with `publish` for a limit learned
and `events` for its log), and `retry`, the attempt loop every request but a rerun goes
through."""
