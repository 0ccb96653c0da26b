"""Tenancy and identity: workspaces, users and their roles, API keys, dashboard sessions."""
