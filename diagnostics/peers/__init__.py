"""Other frameworks' training loops at our shapes, for side-by-side benchmarks (optional extras)."""
