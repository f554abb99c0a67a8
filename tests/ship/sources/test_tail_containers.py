"""Container logs through the real shipper: the kubelet's /var/log/pods tree, CRI and Docker
lines with partials, Kubernetes fields from the path, file input options. (``**`` globs,
excludes and compressed files are in test_discover.)"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sidekick.core.errors import ConfigError
from sidekick.ship.checkpoints import STATE_FILE
from sidekick.ship.prepare import prepare
from tests.ship.helpers import (
    ShipperProcess,
    read_ndjson,
    ship_config,
    shipping,
    wait_for,
    wait_for_sync,
)

UID = "9a1f7c3e-58d2-4b6a-9e0f-2c4d6b8a0e1f"
T = "2024-05-01T10:00:00.5Z"


def pod_log(root: Path, ns: str, pod: str, container: str, restarts: int = 0) -> Path:
    d = root / f"{ns}_{pod}_{UID}" / container
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{restarts}.log"


def records(tmp_path: Path) -> list[dict[str, Any]]:
    return read_ndjson(tmp_path / "out.ndjson")


def config(tmp_path: Path, url: str, **extra: Any) -> Any:
    return ship_config(
        inputs=[url],
        outputs=[f"file://{tmp_path}/out.ndjson"],
        state_dir=str(tmp_path / "state"),
        **extra,
    )


def saved_offsets(tmp_path: Path) -> dict[str, int]:
    path = tmp_path / "state" / STATE_FILE
    if not path.exists():
        return {}
    state = msgspec.json.decode(path.read_bytes())
    return {
        e["path"]: e["offset"] for k, e in state["streams"].items() if not k.endswith("#started")
    }


async def test_cri_pods_tree_ships_joined_lines_with_kubernetes_fields(tmp_path: Path) -> None:
    pods = tmp_path / "pods"
    web = pod_log(pods, "shop", "web-0", "nginx", restarts=2)
    web.write_text(
        f"{T} stdout F GET / 200\n"
        f"{T} stderr P a long \n"
        f"2024-05-01T10:00:00.6Z stdout F GET /x 404\n"
        f"2024-05-01T10:00:00.7Z stderr F warning\n"
    )
    job = pod_log(pods, "batch", "report-x1", "main")
    job.write_text(f"{T} stdout F done\n")
    cfg = config(tmp_path, f"file://{pods}/**/*.log?parser=cri", pod_name="shipper-abc")
    async with shipping(cfg):
        await wait_for(lambda: len(records(tmp_path)) == 4)
    by_message = {r["message"]: r for r in records(tmp_path)}
    joined = by_message["a long warning"]
    assert joined["log.iostream"] == "stderr"
    assert joined["@timestamp"] == "2024-05-01T10:00:00.500000000Z"
    assert joined["log.offset"] == len(f"{T} stdout F GET / 200\n")
    assert by_message["GET /x 404"]["log.iostream"] == "stdout"
    for message in ("GET / 200", "GET /x 404", "a long warning"):
        rec = by_message[message]
        assert (rec["k8s.namespace.name"], rec["k8s.pod.name"]) == ("shop", "web-0")
        assert (rec["k8s.container.name"], rec["k8s.container.restart_count"]) == ("nginx", 2)
        assert rec["k8s.pod.uid"] == UID and "log.flags" not in rec
    # The path's pod wins over the shipper's own (POD_NAME of the DaemonSet's Pod).
    assert by_message["done"]["k8s.pod.name"] == "report-x1"


async def test_pending_partial_line_holds_the_checkpoint_at_its_first_byte(tmp_path: Path) -> None:
    log = pod_log(tmp_path / "pods", "shop", "web-0", "app")
    first = f"{T} stdout F first\n"
    log.write_text(first + f"{T} stdout P half \n")
    cfg = config(
        tmp_path,
        f"file://{tmp_path}/pods/*/*/*.log?parser=cri",
        multiline_timeout=60,
        checkpoint_interval=0.05,
    )
    async with shipping(cfg):
        await wait_for(lambda: [r["message"] for r in records(tmp_path)] == ["first"])
        await wait_for(lambda: saved_offsets(tmp_path).get(str(log)) == len(first))
        await asyncio.sleep(0.3)
        assert saved_offsets(tmp_path)[str(log)] == len(first)
        with log.open("a") as f:
            f.write(f"{T} stdout F and the rest\n")
        await wait_for(lambda: len(records(tmp_path)) == 2)
        await wait_for(lambda: saved_offsets(tmp_path)[str(log)] == log.stat().st_size)
    assert records(tmp_path)[1]["message"] == "half and the rest"
    assert records(tmp_path)[1]["log.offset"] == len(first)


def test_a_partial_line_pending_at_kill_9_is_shipped_whole_after_the_restart(
    tmp_path: Path,
) -> None:
    log = pod_log(tmp_path / "pods", "shop", "web-0", "app")
    log.write_text(f"{T} stdout F before\n{T} stdout P begun \n")
    (tmp_path / "ship.yaml").write_text("ship:\n  multiline_timeout: 60s\n")
    args = [
        "--config", str(tmp_path / "ship.yaml"),
        "--input", f"file://{tmp_path}/pods/**/*.log?parser=cri",
        "--output", f"file://{tmp_path}/out.ndjson",
        "--state-dir", str(tmp_path / "state"),
    ]  # fmt: skip
    shipper = ShipperProcess(args, tmp_path / "ship.log").start()
    try:
        shipper.wait_ready()
        wait_for_sync(lambda: [r["message"] for r in records(tmp_path)] == ["before"])
        # The state file holds the delivered line; the pending piece keeps it from going on.
        wait_for_sync(
            lambda: saved_offsets(tmp_path).get(str(log)) == len(f"{T} stdout F before\n")
        )
        time.sleep(1.2)
    finally:
        shipper.stop_quietly()  # kill -9
    with log.open("a") as f:
        f.write(f"{T} stdout F ended\n")
    shipper = ShipperProcess(args, tmp_path / "ship.log").start()
    try:
        shipper.wait_ready()
        wait_for_sync(lambda: len(records(tmp_path)) == 2)
        assert shipper.terminate() == 0
    finally:
        shipper.stop_quietly()
    assert [r["message"] for r in records(tmp_path)] == ["before", "begun ended"]


def test_the_rest_of_a_line_cut_by_a_stop_is_marked_partial_end_after_the_restart(
    tmp_path: Path,
) -> None:
    # A DaemonSet's rolling update: SIGTERM while the app is in the middle of a long line.
    # The drain ships the pieces read so far marked partial; the rest, read by the next
    # shipper, must say it ends that line. Before, it came without any flag.
    log = pod_log(tmp_path / "pods", "shop", "web-0", "app")
    log.write_text(
        f"{T} stdout F before\n{T} stdout P begun \n{T} stderr F other\n{T} stdout P more \n"
    )
    args = [
        "--input", f"file://{tmp_path}/pods/**/*.log?parser=cri",
        "--output", f"file://{tmp_path}/out.ndjson",
        "--state-dir", str(tmp_path / "state"),
    ]  # fmt: skip
    for wanted in (3, 5):
        shipper = ShipperProcess(args, tmp_path / "ship.log").start()
        try:
            shipper.wait_ready()
            wait_for_sync(lambda n=wanted: len(records(tmp_path)) == n)
            assert shipper.terminate() == 0
        finally:
            shipper.stop_quietly()
        if wanted == 3:
            with log.open("a") as f:
                f.write(f"{T} stdout F ended\n{T} stdout F after\n")
    got = [(r["message"], r.get("log.flags")) for r in records(tmp_path)]
    assert got == [
        ("before", None),
        ("other", None),
        ("begun more ", ["partial"]),
        ("ended", ["partial", "partial_end"]),
        ("after", None),
    ]


async def test_a_runtime_line_over_max_line_bytes_leaves_the_others_joined(
    tmp_path: Path,
) -> None:
    # One stderr line of 500 characters with --max-line-bytes 200 among P and F lines of
    # stdout. Before, the tail cut that chunk itself: the stdout pieces were never joined
    # ('aaa' partial, then 'bbb' unmarked) and the long line's later pieces had no time or
    # stream. Now the joiner cuts the long line, keeping its runtime fields.
    log = pod_log(tmp_path / "pods", "shop", "web-0", "app")
    log.write_text(
        f"{T} stdout P {'a' * 50}\n{T} stdout F {'b' * 50}\n"
        f"2024-05-01T10:00:00.6Z stderr F {'c' * 500}\n"
        f"{T} stdout P {'d' * 50}\n{T} stdout F {'e' * 50}\n"
    )
    cfg = config(tmp_path, f"file://{tmp_path}/pods/**/*.log?parser=cri", max_line_bytes=200)
    async with shipping(cfg):
        await wait_for(lambda: len(records(tmp_path)) == 5)
    got = [
        (r["message"][:1], len(r["message"]), r["log.iostream"], r["@timestamp"][17:23],
         r.get("log.flags"))
        for r in records(tmp_path)
    ]  # fmt: skip
    assert got == [
        ("a", 100, "stdout", "00.500", None),
        ("c", 200, "stderr", "00.600", ["partial"]),
        ("c", 200, "stderr", "00.600", ["partial"]),
        ("c", 100, "stderr", "00.600", ["partial", "partial_end"]),
        ("d", 100, "stdout", "00.500", None),
    ]


async def test_a_line_cut_by_a_kubelet_rotation_ends_partial_end_in_the_new_file(
    tmp_path: Path,
) -> None:
    # The runtime wrote a P piece, the kubelet renamed 0.log and the runtime wrote the F
    # piece into the new 0.log. Before, the piece was shipped partial and the end came as a
    # line of its own, unmarked.
    log = pod_log(tmp_path / "pods", "shop", "web-0", "app")
    log.write_text(f"{T} stdout F first\n{T} stdout P begun \n{T} stderr P err \n")
    cfg = config(tmp_path, f"file://{tmp_path}/pods/**/*.log?parser=cri")
    async with shipping(cfg):
        await wait_for(lambda: len(records(tmp_path)) == 1)
        log.rename(log.with_name("0.log.20240501-100000"))
        log.write_text(f"{T} stdout F ended\n{T} stdout F next\n{T} stderr F too\n")
        await wait_for(lambda: len(records(tmp_path)) == 6)
    got = [(r["message"], r["log.iostream"], r.get("log.flags")) for r in records(tmp_path)]
    assert got == [
        ("first", "stdout", None),
        ("begun ", "stdout", ["partial"]),
        ("err ", "stderr", ["partial"]),
        ("ended", "stdout", ["partial", "partial_end"]),
        ("next", "stdout", None),
        ("too", "stderr", ["partial", "partial_end"]),
    ]


async def test_docker_json_file_lines_are_joined_and_parsed(tmp_path: Path) -> None:
    logs = tmp_path / "containers" / "abc"
    logs.mkdir(parents=True)

    def entry(text: str, stream: str = "stdout") -> str:
        return json.dumps({"log": text, "stream": stream, "time": T}, separators=(",", ":"))

    (logs / "abc-json.log").write_text(
        "\n".join([entry("one\n"), entry("two "), entry("oops\n", "stderr"), entry("halves\n")])
        + "\n"
    )
    cfg = config(tmp_path, f"file://{tmp_path}/containers/*/*-json.log?parser=docker")
    async with shipping(cfg):
        await wait_for(lambda: len(records(tmp_path)) == 3)
    got = [(r["message"], r["log.iostream"]) for r in records(tmp_path)]
    assert got == [("one", "stdout"), ("oops", "stderr"), ("two halves", "stdout")]
    assert "k8s.pod.name" not in records(tmp_path)[0]  # not a kubelet path


async def test_k8s_metadata_can_be_turned_off_or_on_for_any_parser(tmp_path: Path) -> None:
    pods = tmp_path / "pods"
    pod_log(pods, "shop", "web-0", "app").write_text(f"{T} stdout F x\n")
    links = tmp_path / "containers"
    links.mkdir()
    cid = "ab" * 32
    (links / f"web-0_shop_app-{cid}.log").write_text("plain line\n")
    cfg = ship_config(
        inputs=[
            f"file://{pods}/**/*.log?parser=cri&k8s_metadata=none",
            f"file://{links}/*.log?k8s_metadata=path",
        ],
        outputs=[f"file://{tmp_path}/out.ndjson"],
        state_dir=str(tmp_path / "state"),
    )
    async with shipping(cfg):
        await wait_for(lambda: len(records(tmp_path)) == 2)
    by_message = {r["message"]: r for r in records(tmp_path)}
    assert "k8s.pod.name" not in by_message["x"]
    plain = by_message["plain line"]
    assert (plain["k8s.pod.name"], plain["container.id"]) == ("web-0", cid)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        (
            "file:///x/*.log?parser=cri&multiline_start=%5E2",
            "cannot be combined with multiline_start",
        ),
        ("file:///x/*.log?k8s_metadata=api", "neither path nor none"),
        ("file:///x/*.log?exclude=", "exclude is empty"),
        ("http://127.0.0.1:0?exclude=*.gz", "file:// inputs only"),
    ],
)
def test_option_mistakes_are_one_sentence_naming_the_input(
    tmp_path: Path, url: str, words: str
) -> None:
    with pytest.raises(ConfigError, match=words) as info:
        prepare(config(tmp_path, url))
    assert url.split("?")[0] in str(info.value)


def test_exclude_in_the_url_is_repeatable_and_comma_separated(tmp_path: Path) -> None:
    (spec,) = prepare(config(tmp_path, "file:///x/**/*?exclude=*.gz,*.zst&exclude=*.txt")).inputs
    assert spec.exclude == ("*.gz", "*.zst", "*.txt")


def test_global_multiline_start_does_not_apply_to_joining_parsers(tmp_path: Path) -> None:
    cfg = config(tmp_path, "file:///x/*.log?parser=cri", multiline_start="^2")
    (spec,) = prepare(cfg).inputs
    assert spec.multiline_start is None and spec.k8s_metadata is True


async def test_a_file_two_inputs_match_is_shipped_once(tmp_path: Path) -> None:
    # The kubelet's layout: /var/log/containers/<pod>_<ns>_<container>-<id>.log is a symlink
    # to /var/log/pods/.../<n>.log. With one input for each tree (the second following
    # links), every line was shipped twice.
    pods = tmp_path / "pods"
    log = pod_log(pods, "shop", "web-0", "nginx")
    log.write_text(f"{T} stdout F one\n")
    links = tmp_path / "containers"
    links.mkdir()
    link = links / f"web-0_shop_nginx-{'c' * 64}.log"
    link.symlink_to(log)
    pods_url = f"file://{pods}/**/*.log?parser=cri"
    links_url = f"file://{links}/*.log?parser=cri&follow_symlinks=true"
    cfg = ship_config(
        inputs=[pods_url, links_url],
        outputs=[f"file://{tmp_path}/out.ndjson"],
        state_dir=str(tmp_path / "state"),
    )
    skipped = "sidekick_ship_shared_files_skipped_total"
    async with shipping(cfg) as sh:
        await wait_for(lambda: len(records(tmp_path)) == 1)
        with log.open("a") as f:
            f.write(f"{T} stdout F two\n")
        # The kubelet rotates: the file is renamed, a new one takes its name (and the link's).
        log.rename(log.with_name("0.log.20240501-100000"))
        log.write_text(f"{T} stdout F three\n")
        await wait_for(lambda: len(records(tmp_path)) >= 3)
        await asyncio.sleep(1.0)
        assert sh.metric(skipped, input=f"file://{links}/*.log") >= 1
        assert sh.metric(skipped, input=f"file://{pods}/**/*.log") == 0
    got = [r["message"] for r in records(tmp_path)]
    assert sorted(got) == ["one", "three", "two"]
    first = records(tmp_path)[0]
    assert first["log.file.path"] == str(log) and first["k8s.pod.uid"] == UID
