"""Secrets in the gateway vault, bound to the deployed CID.

The gateway answers `POST /vaults` with a `key` (sent as `?key=` on every call, so it is public
in the gateway's logs) and a `token` (reads the vault back; private). Both are kept in
`.kit/secrets.json` (mode 0600, git-ignored) with the names of the secrets and the CID they are
bound to. Secret values are sent once, in the request body, and never stored or printed, except
the caller token, which `kit call` needs to send in the Authorization header.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from kit.errors import GatewayError, InputError
from kit.fsutil import write_private

SECRETS_FILE = Path(".kit") / "secrets.json"
VAULT_TIMEOUT = (5.0, 30.0)


@dataclass(frozen=True)
class VaultBinding:
    cid: str
    gateway_url: str
    key: str
    token: str
    names: tuple[str, ...]
    caller_token: str | None = None

    def public_view(self, current_cid: str | None) -> dict[str, object]:
        """What may be shown: names and binding, never the key's token or values."""
        return {
            "cid": self.cid,
            "gateway_url": self.gateway_url,
            "names": list(self.names),
            "stale": current_cid is not None and current_cid != self.cid,
        }


def load_binding(project_dir: Path) -> VaultBinding | None:
    path = Path(project_dir) / SECRETS_FILE
    try:
        data = json.loads(path.read_text())
        data["names"] = tuple(data["names"])
        return VaultBinding(**data)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError):
        raise InputError(f"{path} is corrupt; run `kit secrets set` again") from None


def set_secrets(
    project_dir: Path, values: dict[str, str], *, gateway_url: str | None = None,
    replace: bool = False,
) -> VaultBinding:
    """Store `values` in the gateway vault for the latest deployment's CID.

    The gateway keeps one set per vault key and a new set replaces the bound one, so a secret
    bound now but not given again would be dropped: refused unless `replace` is true."""
    from kit.contract.config import check_option_url, load_config
    from kit.ipfs.records import load_latest

    if not values:
        raise InputError("no secrets given; pass NAME=VALUE or --from-env NAME")
    if gateway_url is not None:
        check_option_url("--gateway", gateway_url)
    config = load_config(project_dir)
    deployment = load_latest(project_dir)
    if deployment is None:
        raise InputError("no deployment yet: run `kit deploy` first, then set its secrets")
    if not replace:
        _refuse_unbinding(project_dir, values)
    gateway = (gateway_url or config.gateway.url).rstrip("/")
    answer = _post_vault(gateway, deployment.cid, values)
    token_name = config.agent.caller_token_secret
    binding = VaultBinding(
        cid=deployment.cid,
        gateway_url=gateway,
        key=answer["key"],
        token=answer["token"],
        names=tuple(sorted(values)),
        caller_token=values.get(token_name) if token_name else None,
    )
    write_private(Path(project_dir) / SECRETS_FILE, json.dumps(asdict(binding), indent=2) + "\n")
    return binding


def _refuse_unbinding(project_dir: Path, values: dict[str, str]) -> None:
    """InputError naming the bound secrets that `values` would drop (never their values)."""
    binding = load_binding(project_dir)
    dropped = sorted(set(binding.names) - set(values)) if binding is not None else []
    if dropped:
        names = ", ".join(dropped)
        raise InputError(
            f"this would unbind {names}: the vault keeps only the secrets of the latest "
            f"`kit secrets set`; give {names} again (NAME=VALUE or --from-env NAME), or pass "
            "--replace to drop them; nothing was changed"
        )


def _post_vault(gateway: str, cid: str, values: dict[str, str]) -> dict[str, str]:
    import requests

    url = f"{gateway}/vaults"
    try:
        response = requests.post(url, json={"cid": cid, "data": values}, timeout=VAULT_TIMEOUT)
    except requests.RequestException as exc:
        raise GatewayError(
            f"cannot reach the gateway vault at {url} ({type(exc).__name__}); "
            "is the gateway running (`kit dev`) and the URL right?"
        ) from None
    if response.status_code != 200:
        raise GatewayError(
            f"the gateway vault at {url} answered HTTP {response.status_code}; secrets not set"
        )
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not (
        isinstance(answer, dict)
        and answer.get("succeed") is True
        and all(isinstance(answer.get(k), str) and answer[k] for k in ("key", "token"))
    ):
        raise GatewayError(f"the gateway vault at {url} gave a malformed answer; secrets not set")
    return answer
