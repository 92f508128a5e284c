"""The trust chain, Python side: signed texts, signer recovery, answer and quote verification.

- `kit.trust.core`: the signed texts (answer v1, attest v1) and the answer check, in ONE place;
  its marked region is embedded verbatim in the generated mech tool.
- `kit.trust.answer`: delivered results (tool JSON, contract answer, mech delivery) -> verdict.
- `kit.trust.attestation`: `/attestation` documents: fetch with a fresh nonce, check the message
  and report_data binding, dispatch the quote on `quote_type` (`QUOTE_VERIFIERS`).
- `kit.trust.sgx`, `kit.trust.dev` (and `kit.trust.tdx`): one module per quote type.

Everything fails closed: a failed check raises `NotVerified` naming the field or step.
Heavy imports (eth-account, dcap-qvl) happen inside functions.
"""
