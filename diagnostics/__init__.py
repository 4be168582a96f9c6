"""Diagnostics beside the library: benchmarks and the peer frameworks they measure against."""
