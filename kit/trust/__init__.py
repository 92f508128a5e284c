"""The trust chain, Python side: signed texts, signer recovery, answer and quote verification.

- `kit.trust.core`: the signed texts (answer v1, attest v1), the answer check, the attestation
  field check, the report_data rule and the SGX DCAP check, in ONE place; its two marked regions
  are embedded verbatim in the generated mech tool (`verifier_source()`,
  `attestation_verifier_source()`), so the kit and the tool run the same code.
- `kit.trust.answer`: delivered results (tool JSON, contract answer, mech delivery) -> verdict.
- `kit.trust.attestation`: `/attestation` documents: fetch with a fresh nonce, check, record.
- `kit.trust.seal`: private requests (issue 14): ECIES as eciespy/eciesjs define it, the sealed
  request, proof v2 over both ciphertexts (its marked region is embedded in the tool), and
  `seal_request` / `open_answer` for requesters (`kit encrypt`, `kit decrypt`).
- `kit.trust.quotes`: the quote dispatch on `quote_type` (`QUOTE_VERIFIERS`: sgx, dev, tdx;
  anything else refused) and the policy; `kit.trust.sgx`, `kit.trust.dev`, `kit.trust.tdx`.

Everything fails closed: a failed check raises `NotVerified` naming the field or step.
Heavy imports (eth-account, dcap-qvl) happen inside functions.

What a verified proof proves, link by link:
1. CID -> code: the CID is the hash of the contract's bytes (checked at deploy).
2. code -> key: the signing key comes from `Wapo.deriveSecret`, which the worker binds to the
   running app; so only that app, on a genuine worker, holds it.
3. key -> answer: the signature over the answer text v1 binds cid, model, the sha256 of the
   system prompt, prompt, answer and provider proof; any change breaks it.
4. worker -> key: `/attestation` has the worker quote (report_data =
   keccak256(0x65 || app_address || message) || 0^32) a message naming the signer, the
   encryption key and a fresh nonce; dcap-qvl checks the quote up to Intel's root CA.
What it does not prove: that the provider's model produced the answer (issue 12 adds provider
proofs); and, as long as it is not settled whether the real worker's `app_address` is the
script or the shared JavaScript runtime, that the quote identifies this script: then the
binding of key to code rests on `deriveSecret` alone. That is why `app_address` (and the SGX
MRENCLAVE) must be given explicitly; nothing guesses them. Dev quotes (local runtime) prove no
hardware at all and pass only with `allow_dev` (`--allow-dev-quote`).
"""
