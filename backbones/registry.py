"""The backbone and recipe registries."""

from bench.registry import Registry

BACKBONES = Registry("backbone")
RECIPES = Registry("recipe")
