"""When a request may leave: the clock seam, the token bucket, the adaptive rate, the
opening burst, the circuit, the pacer that puts them together, and `retry`, the attempt
loop every request but a rerun goes through."""
