"""The teacher registry."""

from bench.registry import Registry

TEACHERS = Registry("teacher")
