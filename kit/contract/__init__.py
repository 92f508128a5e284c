"""The contract: typed config, rendering, bundling the user module, presets, init and build."""
