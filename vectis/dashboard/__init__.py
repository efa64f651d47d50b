"""The dashboard: registry, registration, sync, admin API and web page."""
