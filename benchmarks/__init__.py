"""Election-latency benchmarks (run as ``python -m benchmarks.<name>``)."""
