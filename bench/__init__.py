"""Benchmarks: quality and speed, reported as ratios against baselines measured in the same run
(this machine is shared and noisy), never as timed asserts in tests."""
