"""Decode backends: one `Decoder` interface (base.py), one registry (registry.py)."""
