"""Benchmarks of the platform (``make bench``): figures as ratios against a named peer."""
