"""Shared fixtures live in tests/fixtures/, one module per real component."""

pytest_plugins = [
    "fixtures.projects",
    "fixtures.ipfs_node",
    "fixtures.servers",
    "fixtures.mech",
    "fixtures.olas",
]
