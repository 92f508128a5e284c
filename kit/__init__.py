"""Agent-contract development kit: build, run, pin and sell Phala WapoJS agent contracts."""

from __future__ import annotations

__version__ = "0.1.0"
