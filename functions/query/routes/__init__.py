"""Route modules joined by query.handler with ``include_router``."""
