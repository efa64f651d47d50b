"""The worker: the `/sync` daemon, its stats, and its calls to the dashboard."""
