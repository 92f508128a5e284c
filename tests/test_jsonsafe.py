"""Untrusted JSON never reaches `json.loads` unmeasured (kit.jsonsafe).

eth-account brings py_ecc, which raises the interpreter's recursion limit to 100000 at import;
after that, `json.loads` of deeply nested input overflows a thread's C stack and the whole
process dies with SIGSEGV. The control below shows that crash, so the other tests can fail.
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap

import pytest

from kit import jsonsafe

DEEP = 200_000


def _depth(value: object) -> int:
    """The oracle: nesting depth of a parsed value, computed from the parsed structure."""
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    return 0


def _random_value(rng: random.Random, budget: int) -> object:
    if budget == 0 or rng.random() < 0.3:
        return rng.choice(['a"[{b', "\\]}", "plain", 3, None, True, "\u2028["])
    if rng.random() < 0.5:
        return [_random_value(rng, budget - 1) for _ in range(rng.randint(0, 3))]
    return {f"k{i}[": _random_value(rng, budget - 1) for i in range(rng.randint(0, 3))}


def test_depth_agrees_with_the_parsed_structure() -> None:
    rng = random.Random(7)
    for _ in range(300):
        value = _random_value(rng, 12)
        text = json.dumps(value, ensure_ascii=rng.random() < 0.5)
        assert jsonsafe.nesting_depth(text, limit=100) == _depth(value)
        assert jsonsafe.loads(text) == value


def test_too_deep_is_a_value_error_naming_the_limit() -> None:
    with pytest.raises(ValueError, match="deeper than 64 levels"):
        jsonsafe.loads("[" * 65 + "]" * 65)
    assert jsonsafe.loads("[" * 64 + "]" * 64) is not None


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60)


def test_control_plain_json_loads_crashes_once_eth_account_is_imported() -> None:
    done = _run(f"""
        import json, threading, eth_account
        def parse():
            try:
                json.loads("[" * {DEEP} + "]" * {DEEP})
            except RecursionError:
                print("recursion error")
        thread = threading.Thread(target=parse); thread.start(); thread.join()
    """)
    assert done.returncode < 0, "expected the interpreter to die: the premise of kit.jsonsafe"


def test_gateway_body_and_contract_output_survive_deep_nesting() -> None:
    done = _run(f"""
        import threading, eth_account
        from kit import jsonsafe
        from kit.local.runtime import map_output
        results = []
        def parse():
            try:
                jsonsafe.loads("[" * {DEEP} + "]" * {DEEP})
            except ValueError as exc:
                results.append(str(exc))
            results.append(map_output('{{"body": ' + "[" * {DEEP} + "]" * {DEEP} + "}}"))
        thread = threading.Thread(target=parse); thread.start(); thread.join()
        print(results[0]); print(results[1][0], results[1][3])
    """)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert "deeper than" in first
    assert second.startswith("500 ") and "invalid_output" in second
