"""The HTTP and WebSocket edge: REST values, tick ingest, live WebSocket fan-out, the dashboard."""
