"""dstack (Phala Cloud) support: the app-compose document and its hash, the stand-in guest agent.

- `kit.dstack.compose`: the gateway's app-compose document (images pinned by digest), its
  compose hash through `dstack_sdk.get_compose_hash`, the record in `deployments/dstack.json`,
  and the `phala` CLI commands that deploy it.
- `kit.dstack.simulator`: a STAND-IN guest agent (the CVM's `/var/run/dstack.sock` API) with
  deterministic keys and dev quotes that never pass production verification.

TDX quote verification lives with the other quote types in `kit.trust.tdx`.
"""
