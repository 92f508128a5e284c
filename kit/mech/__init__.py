"""The mech tool: package generation, tool metadata, vault secrets, invoking as a mech does."""
