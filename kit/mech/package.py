"""The mech tool package bound to the deployed CID: files, fingerprints, package hash.

`generate_tool` renders `packages/<author>/customs/<name>/{__init__.py, <name>.py,
component.yaml}` from `kit/templates/mech_tool/` and records the package hash in
`packages/packages.json`, hashing exactly as `autonomy packages lock` does (REFERENCE section 2):

- a file's fingerprint is its CIDv0 (Kubo's recipe, not wrapped) written as CIDv1 base32;
- the package hash is the CID of the package directory wrapped in a directory that links it by
  its folder name (`ipfs add -r -w`), as CIDv1 base32.

The kit owns the package directory: unknown files in it are refused rather than silently
published, except a `tests/` folder (as mech-predict's tools ship), which is fingerprinted and
hashed with the package as Olas does (each file under its relative path, `__pycache__` and
`*.pyc` skipped). Rendering and hashing happen in a staging directory first, so a failure leaves the
previous package untouched; a package whose content changes gets the next patch version.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from datetime import datetime, timezone
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from kit.errors import CidMismatch, InputError
from kit.fsutil import atomic_write
from kit.resources import templates_dir

if TYPE_CHECKING:
    from jinja2.sandbox import SandboxedEnvironment

    from kit.contract.config import ProjectConfig
    from kit.ipfs.records import Deployment

COMPONENT_FILE = "component.yaml"
PACKAGES_FILE = "packages.json"
PACKAGE_TYPE = "custom"
# The mech reads the provider key of these kinds from these api_keys services.
PROVIDER_KEY_SERVICES = {
    "openai": "openai", "anthropic": "anthropic", "openai-compatible": "openai",
    "confidential": "openai",  # OpenAI-compatible (issue 12)
}
SKIPPED_ENTRIES = ("__pycache__",)
TESTS_DIR = "tests"
# What the generated tool imports beyond the standard library, pinned as mech-predict pins it
# (valory-xyz/mech-predict pyproject.toml: "requests==2.32.5").
TOOL_DEPENDENCIES = {"requests": "==2.32.5"}
# The models the mech's token counter has a price for: the keys of TokenCounterCallback.
# TOKEN_PRICES in valory-xyz/mech packages/valory/skills/task_execution/utils/benchmarks.py
# (commit 0048fd2d88211f3379af56807cef11aa05ea1dde). Its __call__ raises ValueError("Model ...
# not supported.") for any other name, and the mech then bills nothing for the request.
MECH_PRICED_MODELS = frozenset({
    "gpt-3.5-turbo", "gpt-3.5-turbo-0125", "gpt-3.5-turbo-1106", "gpt-4", "gpt-4-turbo-preview",
    "gpt-4-0125-preview", "gpt-4-1106-preview", "claude-2", "claude-3-haiku-20240307",
    "claude-3-sonnet-20240229", "claude-3-opus-20240229", "cohere/command-r-plus",
    "databricks/dbrx-instruct:nitro", "nousresearch/nous-hermes-2-mixtral-8x7b-sft",
})
_RESOURCE_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,127}\Z")  # the ecosystem's id pattern
_HOLDER = re.compile(r"^[^\x00-\x1f\x7f]{1,100}\Z")
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)\Z")


@dataclass(frozen=True)
class ToolResult:
    package_dir: Path
    package_hash: str
    fingerprints: dict[str, str]
    tools_to_package_hash: dict[str, str]
    customs_line: str
    version: str
    cid: str
    author: str
    name: str
    changed: bool = True
    warnings: tuple[str, ...] = ()
    metadata_path: Path | None = None  # the mech's tool metadata (kit.mech.metadata)

    @property
    def public_id(self) -> str:
        return f"{self.author}/{self.name}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "package_dir": str(self.package_dir),
            "package_hash": self.package_hash,
            "fingerprints": self.fingerprints,
            "tools_to_package_hash": self.tools_to_package_hash,
            "customs_line": self.customs_line,
            "public_id": self.public_id,
            "version": self.version,
            "cid": self.cid,
            "changed": self.changed,
            "warnings": list(self.warnings),
            "metadata_path": str(self.metadata_path) if self.metadata_path else None,
        }


# --- hashing (the ecosystem's recipe) -------------------------------------------------------


def file_fingerprint(path: Path) -> str:
    """A file's fingerprint as `autonomy packages lock` writes it (bafybei...)."""
    from kit.cid import file_cid, to_cidv1_base32

    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty; the ecosystem cannot fingerprint empty files")
    return to_cidv1_base32(file_cid(path, version=0))


def _hashed_entry(entry: Path) -> bool:
    return entry.name not in SKIPPED_ENTRIES and entry.suffix != ".pyc"


def package_hash(package_dir: Path) -> str:
    """The package hash: the directory wrapped by its name, `__pycache__` and `*.pyc` skipped."""
    from kit.cid import path_cid, to_cidv1_base32

    cid = path_cid(package_dir, version=0, wrap=True, include=_hashed_entry, hidden=True)
    return to_cidv1_base32(cid)


# --- versions -------------------------------------------------------------------------------


def _version_tuple(version: str) -> tuple[int, int, int]:
    major, minor, patch = (int(part) for part in version.split("."))
    return major, minor, patch


def bump_patch(version: str) -> str:
    major, minor, patch = _version_tuple(version)
    return f"{major}.{minor}.{patch + 1}"


def _check_names(author: str, name: str, version: str | None) -> None:
    for label, value in (("author", author), ("name", name)):
        if not _RESOURCE_NAME.match(value):
            raise InputError(
                f"--{label} {value!r:.80} is not valid; use letters, digits and '_' (not first)"
            )
    if version is not None and not _SEMVER.match(version):
        raise InputError(f"--version {version!r:.80} is not valid; use MAJOR.MINOR.PATCH")


# --- rendering ------------------------------------------------------------------------------


def _yaml_scalar(value: Any) -> str:
    """`value` as one-line YAML: plain or quoted as PyYAML would, double-quoted if multi-line."""
    import yaml

    text = yaml.safe_dump(value, width=float("inf"), allow_unicode=True)
    text = text.removesuffix("\n").removesuffix("\n...")
    if "\n" in text:
        return json.dumps(value, ensure_ascii=False)
    return text


def _python_literal(value: str | bool) -> str:
    """A Python literal for `value` as black writes it (double quotes unless the text has some
    and no single quote); a JSON string is a valid Python string."""
    if isinstance(value, bool):
        return repr(value)
    text = json.dumps(value, ensure_ascii=False)
    if '"' in value and "'" not in value:
        text = "'" + text[1:-1].replace('\\"', '"') + "'"
    return text


def _python_list(values: list[str]) -> str:
    """A list literal black leaves as it is: one item a line, with the magic trailing comma."""
    return "[\n" + "".join(f"    {_python_literal(v)},\n" for v in values) + "]"


def _environment() -> SandboxedEnvironment:
    from kit.contract.render import sandboxed_environment

    filters = {"py": _python_literal, "pylist": _python_list, "yaml": _yaml_scalar}
    return sandboxed_environment(templates_dir() / "mech_tool", filters, trim_blocks=True)


@dataclass(frozen=True)
class ToolOptions:
    """Choices `kit tool` exposes beyond agent.toml."""

    copyright_holder: str | None = None  # default: the package author
    used_params: bool = False  # return the 6-tuple with used_params


def _tool_context(config: ProjectConfig, deployment: Deployment, author: str, name: str,
                  version: str, options: ToolOptions) -> dict[str, Any]:
    from kit.trust.toolgen import tool_context, tool_dependencies

    description = config.agent.description or (
        f"Runs a prompt through the agent contract {config.agent.name} in a Phala TEE worker."
    )
    return {
        "name": name,
        "author": author,
        "version": version,
        "description": description,
        "cid": deployment.cid,
        # replicas of one app (tool.gateways), else the deployment's gateway alone
        "gateway_urls": list(config.tool.gateways) or [deployment.gateway_url.rstrip("/")],
        "prefix": config.tool.prefix,
        "models": list(config.provider.models),
        "default_model": config.provider.default_model,
        "provider_key_service": PROVIDER_KEY_SERVICES[config.provider.kind],
        "caller_token_required": config.agent.caller_token_secret is not None,
        "forward_provider_key": config.provider.accept_key_in_body,
        "return_used_params": options.used_params,
        "preset": config.contract.preset,  # "prediction": the trader's result format
        "copyright_holder": options.copyright_holder or author,
        "copyright_year": datetime.now(timezone.utc).year,
        "dependencies": {**TOOL_DEPENDENCIES, **tool_dependencies(config)},
        **tool_context(config, deployment),  # answer verification (kit/trust)
    }


def unpriced_models(models: tuple[str, ...] | list[str]) -> list[str]:
    """The models the mech's token counter has no price for (it bills nothing for them)."""
    return [model for model in models if model not in MECH_PRICED_MODELS]


def _trust_warnings(config: ProjectConfig, deployment: Deployment) -> tuple[str, ...]:
    from kit.trust.toolgen import tool_warnings

    return tool_warnings(config, deployment)


def _price_warnings(config: ProjectConfig) -> tuple[str, ...]:
    missing = unpriced_models(config.provider.models)
    if not missing:
        return ()
    return (
        f"the mech's token counter has no price for {', '.join(missing)}: requests for "
        f"{'it' if len(missing) == 1 else 'them'} are answered but billed 0 (TokenCounterCallback."
        "TOKEN_PRICES in the mech's task_execution skill); price them there or set tool prices "
        "(TOOLS_TO_PRICING) in the mech's service config",
    )


def _render(environment: SandboxedEnvironment, template: str, context: dict[str, Any]) -> bytes:
    return environment.get_template(template).render(**context).encode("utf-8")


@dataclass(frozen=True)
class _Package:
    files: dict[str, bytes]
    fingerprints: dict[str, str]
    package_hash: str


def _hashed_files(package_dir: Path) -> list[str]:
    """The files the package hash covers, as relative POSIX paths (Olas' ignore rules)."""
    found = []
    for path in sorted(package_dir.rglob("*")):
        relative = path.relative_to(package_dir)
        if any(not _hashed_entry(Path(part)) for part in relative.parts) or not path.is_file():
            continue
        found.append(relative.as_posix())
    return found


def _test_files(package_dir: Path) -> dict[str, bytes]:
    """The package's own tests/ folder (kept across regenerations, never written by the kit)."""
    tests = package_dir / TESTS_DIR
    if not tests.is_dir():
        return {}
    files = {}
    for relative in _hashed_files(package_dir):
        if not relative.startswith(TESTS_DIR + "/"):
            continue
        if any(part.startswith(".") for part in relative.split("/")):
            raise InputError(f"{package_dir / relative} is hidden; `ipfs add` would skip it "
                             "while the package hash covers it: move it out")
        data = (package_dir / relative).read_bytes()
        if not data:
            raise InputError(f"{package_dir / relative} is empty; the ecosystem cannot "
                             "fingerprint empty files: give it content (e.g. a docstring)")
        files[relative] = data
    return files


def _build_package(context: dict[str, Any], tests: dict[str, bytes]) -> _Package:
    """Render the files and hash them (with tests/) in a staging directory named like the
    package."""
    environment = _environment()
    name = context["name"]
    sources = {
        "__init__.py": _render(environment, "__init__.py.j2", context),
        f"{name}.py": _render(environment, "tool.py.j2", context),
    }
    with tempfile.TemporaryDirectory(prefix="kit-tool-") as staging:
        package_dir = Path(staging) / name
        package_dir.mkdir()
        for file_name, data in {**sources, **tests}.items():
            (package_dir / file_name).parent.mkdir(parents=True, exist_ok=True)
            (package_dir / file_name).write_bytes(data)
        fingerprints = {file: file_fingerprint(package_dir / file)
                        for file in sorted({**sources, **tests})}
        component = _render(environment, "component.yaml.j2",
                            {**context, "fingerprints": fingerprints})
        (package_dir / COMPONENT_FILE).write_bytes(component)
        digest = package_hash(package_dir)
    return _Package({**sources, COMPONENT_FILE: component}, fingerprints, digest)


# --- the project's state --------------------------------------------------------------------


def _latest_deployment(project_dir: Path) -> Deployment:
    from kit.ipfs.records import load_latest

    deployment = load_latest(project_dir)
    if deployment is None:
        raise InputError(
            f"no deployment recorded in {project_dir / 'deployments'}; run `kit deploy` first, "
            "then `kit tool`"
        )
    return deployment


def _check_build_matches(project_dir: Path, deployment: Deployment) -> None:
    """The tool must call what the project builds: refuse when dist/agent.js has moved on."""
    from kit.cid import file_cid, to_cidv1_base32

    artifact = project_dir / deployment.artifact
    if not artifact.is_file():
        raise InputError(f"{artifact} is missing; run `kit deploy` to build and deploy again")
    current = file_cid(artifact, version=deployment.cid_version)
    if to_cidv1_base32(current) != to_cidv1_base32(deployment.cid):
        raise InputError(
            f"{deployment.artifact} hashes to {current}, not to the deployed CID "
            f"{deployment.cid}: the build changed since the deployment; run `kit deploy`"
        )


def _check_owned(package_dir: Path, name: str) -> None:
    if not package_dir.exists():
        return
    expected = {"__init__.py", f"{name}.py", COMPONENT_FILE, TESTS_DIR, *SKIPPED_ENTRIES}
    unknown = sorted(entry.name for entry in package_dir.iterdir() if entry.name not in expected)
    if unknown:
        raise InputError(
            f"{package_dir} holds files the kit did not generate ({', '.join(unknown[:5])}); "
            "they would be published with the package: move them out and run `kit tool` again"
        )


def _previous_version(package_dir: Path) -> str | None:
    import yaml

    path = package_dir / COMPONENT_FILE
    if not path.is_file():
        return None
    try:
        version = yaml.safe_load(path.read_text(encoding="utf-8")).get("version")
    except (yaml.YAMLError, AttributeError, UnicodeDecodeError):
        version = None
    if not isinstance(version, str) or not _SEMVER.match(version):
        raise InputError(f"{path} has no valid version; fix it or pass --version")
    return version


def _on_disk(package_dir: Path, files: dict[str, bytes]) -> bool:
    return all(
        (package_dir / name).is_file() and (package_dir / name).read_bytes() == data
        for name, data in files.items()
    )


def _read_packages(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"dev": {}, "third_party": {}}
    try:
        packages = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); fix or delete it") from None
    if not isinstance(packages, dict) or not all(
        isinstance(packages.get(section, {}), dict) for section in ("dev", "third_party")
    ):
        raise InputError(f'{path} must be {{"dev": {{...}}, "third_party": {{...}}}}; fix it')
    return packages


def _updated_packages(packages: dict[str, Any], author: str, name: str, version: str,
                      digest: str) -> dict[str, Any]:
    """`packages` with this package's entry (any version) replaced in place, others kept."""
    prefix = f"{PACKAGE_TYPE}/{author}/{name}/"
    key = prefix + version
    dev: dict[str, str] = {}
    for existing, value in packages.get("dev", {}).items():
        if not existing.startswith(prefix):
            dev[existing] = value
        elif key not in dev:
            dev[key] = digest
    dev.setdefault(key, digest)
    updated = {"dev": dev, "third_party": packages.get("third_party", {})}
    updated.update((section, value) for section, value in packages.items()
                   if section not in updated)
    return updated


# --- the public entry points ----------------------------------------------------------------


@dataclass(frozen=True)
class _Rendered:
    package: _Package
    unchanged: bool  # every file already on disk with these bytes


def _choose_version(previous: str | None, configured: str, explicit: str | None,
                    render: Callable[[str], _Rendered]) -> tuple[str, _Rendered]:
    """Explicit wins; a first package takes the configured version (so does a configured one
    above the previous); otherwise the previous version stays while nothing changed and gets
    a patch bump when the content changed (a re-deploy, a template or config change)."""
    if explicit is not None:
        return explicit, render(explicit)
    if previous is None or _version_tuple(configured) > _version_tuple(previous):
        return configured, render(configured)
    rendered = render(previous)
    if rendered.unchanged:
        return previous, rendered
    bumped = bump_patch(previous)
    return bumped, render(bumped)


def generate_tool(project_dir: Path, *, packages_dir: Path | None = None, author: str | None = None,
                  name: str | None = None, version: str | None = None,
                  options: ToolOptions | None = None) -> ToolResult:
    """Write the mech tool package for the latest deployment and record its hash."""
    from kit.contract.config import load_config

    project_dir = Path(project_dir)
    config = load_config(project_dir)
    author = author or config.tool.author
    name = name or config.tool.name
    _check_names(author, name, version)
    deployment = _latest_deployment(project_dir)
    _check_build_matches(project_dir, deployment)
    packages_dir = Path(packages_dir) if packages_dir is not None else project_dir / "packages"
    package_dir = packages_dir / author / "customs" / name
    _check_owned(package_dir, name)
    packages_path = packages_dir / PACKAGES_FILE
    packages = _read_packages(packages_path)
    options = options or ToolOptions()
    holder = options.copyright_holder
    if holder is not None and not _HOLDER.match(holder):
        raise InputError(f"--copyright-holder {holder!r:.80} is not valid; use one line of "
                         "1-100 printable characters")
    tests = _test_files(package_dir)

    def render(candidate: str) -> _Rendered:
        context = _tool_context(config, deployment, author, name, candidate, options)
        package = _build_package(context, tests)
        return _Rendered(package, _on_disk(package_dir, package.files))

    chosen, rendered = _choose_version(_previous_version(package_dir), config.tool.version,
                                       version, render)
    package = rendered.package
    if not rendered.unchanged:
        for file_name, data in package.files.items():
            atomic_write(package_dir / file_name, data)
    updated = _updated_packages(packages, author, name, chosen, package.package_hash)
    if updated != packages or not packages_path.exists():
        atomic_write(packages_path, json.dumps(updated, indent=4) + "\n")
    tools = [config.tool.prefix + model for model in config.provider.models]
    metadata_path = _write_metadata(packages_dir, tools, name, config,
                                    _tool_context(config, deployment, author, name, chosen,
                                                  options)["description"])
    return ToolResult(
        package_dir=package_dir,
        package_hash=package.package_hash,
        fingerprints=package.fingerprints,
        tools_to_package_hash={tool: package.package_hash for tool in tools},
        customs_line=f"- {author}/{name}:{chosen}:{package.package_hash}",
        version=chosen,
        cid=deployment.cid,
        author=author,
        name=name,
        changed=not rendered.unchanged,
        warnings=_price_warnings(config) + _trust_warnings(config, deployment),
        metadata_path=metadata_path,
    )


def _write_metadata(packages_dir: Path, tools: list[str], name: str, config: ProjectConfig,
                    description: str) -> Path:
    """metadata.json beside packages/, as the mech's scripts keep it (kit.mech.metadata)."""
    from kit.mech.metadata import METADATA_FILE, write_metadata

    path = packages_dir.parent / METADATA_FILE
    write_metadata(path, tools, name, description, config.contract.preset)
    return path


def push_package(package_dir: Path, expected_hash: str, *, ipfs_api: str,
                 timeout: float = 30.0) -> str:
    """Add and pin exactly the files the package hash covers, wrapped (`ipfs add -r -w`), and
    check the node's root CID. `__pycache__/` and `*.pyc` (which appear once the tool has been
    imported) are left out, as the hash leaves them out.

    Raises CidMismatch when the node's hash differs from `expected_hash` (compared as CIDv1),
    after unpinning what it added.
    """
    from kit.cid import to_cidv1_base32
    from kit.ipfs.client import IpfsClient

    client = IpfsClient(ipfs_api, timeout=timeout)
    with tempfile.TemporaryDirectory(prefix="kit-push-") as staging:
        copy = Path(staging) / package_dir.name
        for relative in _hashed_files(package_dir):
            (copy / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(package_dir / relative, copy / relative)
        root = client.add_directory(copy, wrap=True)
    if to_cidv1_base32(root) != to_cidv1_base32(expected_hash):
        client.unpin(root)
        raise CidMismatch(
            f"the IPFS node hashed {package_dir.name} to {to_cidv1_base32(root)}, the kit to "
            f"{expected_hash} (the pin was removed): the files changed since `kit tool` or the "
            "node adds differently; run `kit tool` again and do not publish the old hash"
        )
    return to_cidv1_base32(root)
