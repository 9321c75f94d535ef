"""prequal's benchmarks: whole-system measurements, never timed assertions in tests."""
