"""Backbones for the TSN wrapper."""
