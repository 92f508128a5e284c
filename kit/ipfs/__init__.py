"""IPFS: the RPC client, the local node, pinning backends, deploy and deployment records."""
