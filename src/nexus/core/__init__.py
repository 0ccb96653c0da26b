"""Foundations every other package builds on; imports nothing else of nexus."""
