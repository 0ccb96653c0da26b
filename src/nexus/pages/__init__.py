"""Hosted funnel pages: the blocks they are made of (issue #7, in progress)."""
