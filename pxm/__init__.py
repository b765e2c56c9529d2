"""pxm — CLI and wiring: Tiled server, RunEngine, subscriptions, demo, live pipeline (docs/decisions/0001-rooms.md)."""
