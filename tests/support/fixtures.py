"""Fixture registry: each support module's fixtures are re-exported here so conftest stays one line."""
