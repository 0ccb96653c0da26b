"""Server-rendered pages: the dashboard (and later the hosted funnel pages and the SDK)."""
