"""The method registry."""

from bench.registry import Registry

METHODS = Registry("method")
