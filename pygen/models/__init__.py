"""Thin model classes built on pygen.layers."""

__all__: list[str] = []
