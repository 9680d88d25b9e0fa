"""Shipped defaults (installed as ``omen_local.resources``): config and pricing table."""
