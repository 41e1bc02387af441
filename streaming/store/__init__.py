"""State, history and fan-out: one interface, a Redis and an in-memory implementation."""
