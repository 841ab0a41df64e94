"""Deploy stages, in order. Each module exposes `run(ctx, engine)` and decides per host."""
