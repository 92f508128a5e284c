"""`kit dev --watch` (kit.local.watch): rebuild on change, serve the new CID at once, keep the last
good build serving after a broken edit. Bounded: every wait has a deadline of a few seconds."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from kit.cid import bytes_cid
from kit.local.watch import ProjectWatcher, WatchEvent, changed_paths, snapshot

DEADLINE_SECONDS = 10.0


def _replace(path: Path, text: str) -> None:
    """Save the way editors do: write a temp file, then rename it over the original."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name("." + path.name + ".swp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_snapshot_sees_config_and_src_but_not_editor_temp_files(project_factory) -> None:
    project = project_factory()
    before = snapshot(project)
    assert set(before) == {"agent.toml", "src/agent.js"}
    _replace(project / "src" / "agent.js", "// one\n")
    (project / "src" / "lib").mkdir()
    (project / "src" / "lib" / "data.json").write_text("{}")
    (project / "src" / ".agent.js.swp").write_text("x")
    after = snapshot(project)
    assert changed_paths(before, after) == ("src/agent.js", "src/lib/data.json")


def test_an_edit_is_served_under_its_new_cid_and_a_broken_edit_keeps_the_last_good_build(
    project_factory, local_gateway_factory
) -> None:
    project = project_factory()
    gateway = local_gateway_factory(project)
    events: list[WatchEvent] = []
    watcher = ProjectWatcher(project, events.append)
    config = project / "agent.toml"

    text = config.read_text().replace('description = ""', 'description = "edited once"')
    _replace(config, text)
    event = watcher.poll_once()
    assert event is not None and event.ok and event.changed == ("agent.toml",)
    built = (project / "dist" / "agent.js").read_bytes()
    assert event.cid == bytes_cid(built)  # the CID of the bytes now on disk
    status, info = _get(f"{gateway.url}/ipfs/{event.cid}/info")
    assert status == 200 and info["agent"]["description"] == "edited once"

    _replace(config, text.replace("max_prompt_chars = 8000", "max_prompt_chars = -1"))
    broken = watcher.poll_once()
    assert broken is not None and not broken.ok and broken.cid is None
    assert "agent.max_prompt_chars" in broken.error
    assert (project / "dist" / "agent.js").read_bytes() == built  # nothing replaced
    status, info = _get(f"{gateway.url}/ipfs/{event.cid}/info")
    assert status == 200 and info["agent"]["description"] == "edited once"
    assert watcher.poll_once() is None  # unchanged files: no rebuild
    assert [e.ok for e in events] == [True, False]


def test_the_polling_thread_rebuilds_within_the_deadline(project_factory) -> None:
    project = project_factory()
    events: list[WatchEvent] = []
    watcher = ProjectWatcher(project, events.append, interval=0.02)
    watcher.start()
    try:
        config = project / "agent.toml"
        _replace(config, config.read_text().replace('description = ""',
                                                    'description = "threaded"'))
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not events and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        watcher.stop()
    assert len(events) == 1 and events[0].ok
    assert events[0].cid == bytes_cid((project / "dist" / "agent.js").read_bytes())


def test_a_broken_module_edit_names_its_line_and_the_fix_is_served(
    project_factory, local_gateway_factory
) -> None:
    project = project_factory(accept_key_in_body=True)
    gateway = local_gateway_factory(project)
    watcher = ProjectWatcher(project, lambda event: None)
    source = project / "src" / "agent.js"
    good_cid = bytes_cid((project / "dist" / "agent.js").read_bytes())

    _replace(source, "export async function handle(input, ctx) {\n  return 'v1' +;\n}\n")
    broken = watcher.poll_once()
    assert broken is not None and not broken.ok
    assert broken.error.startswith("src/agent.js:2: SyntaxError")
    status, _ = _get(f"{gateway.url}/ipfs/{good_cid}/info")
    assert status == 200  # the last good build keeps serving

    _replace(source, "export async function handle(input, ctx) {\n"
                     "  return 'v2 ' + input.prompt;\n}\n")
    fixed = watcher.poll_once()
    assert fixed is not None and fixed.ok and fixed.cid != good_cid
    request = urllib.request.Request(
        f"{gateway.url}/ipfs/{fixed.cid}", method="POST",
        data=json.dumps({"prompt": "hi", "api_key": "test-provider-key"}).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["message"] == "v2 hi"
