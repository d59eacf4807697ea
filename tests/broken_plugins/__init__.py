"""Deliberately broken driver plugins, built from a real one, that the contract suite must reject."""
