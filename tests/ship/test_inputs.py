"""A parser and a multi-line start per input: ``--input 'URL?parser=KIND&multiline_start=RE'``
and ``inputs: [{url, parser, multiline_start}]``, through the real shipper."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest

from sidekick.core.errors import ConfigError
from sidekick.ship.acks import AckTracker
from sidekick.ship.config import InputConfig
from sidekick.ship.prepare import prepare
from sidekick.ship.records import Record
from sidekick.ship.sources import split_options
from sidekick.ship.sources.base import SourceBatch
from tests.conftest import free_port
from tests.ship.helpers import (
    ShipperProcess,
    read_ndjson,
    ship_config,
    shipping,
    wait_for,
    wait_for_sync,
)
from tests.ship.test_cli import assert_one_sentence, ship
from tests.ship.test_pipeline import ScriptedSink, make, run_until_drained

ACCESS = (
    '10.0.0.7 - - [22/Nov/2026:10:00:00 +0200] "GET /health?full=1 HTTP/1.1" 200 17 "-" '
    '"kube-probe/1.29"'
)
APP = '{"level": "info", "message": "order 42 paid", "order": 42}'
TRACEBACK = [
    "2026-11-22 08:00:02 ERROR handler failed",
    "Traceback (most recent call last):",
    "ValueError: x",
]
DATE_START = r"^\d{4}-\d{2}-\d{2} "


def logs_in(tmp_path: Path) -> tuple[Path, Path]:
    """``app/app.txt`` with one JSON line and ``web/access.log`` with one access line."""
    app, web = tmp_path / "app", tmp_path / "web"
    app.mkdir()
    web.mkdir()
    (app / "app.txt").write_text(APP + "\n")
    (web / "access.log").write_text(ACCESS + "\n")
    return app / "app.txt", web / "access.log"


def by_file(records: list[dict[str, object]], path: Path) -> list[dict[str, object]]:
    return [r for r in records if r["log.file.path"] == str(path)]


async def test_two_inputs_with_their_own_parsers_ship_each_file_parsed_its_way(
    tmp_path: Path,
) -> None:
    app, web = logs_in(tmp_path)
    out = tmp_path / "out.ndjson"
    cfg = ship_config(
        inputs=[
            f"file://{app.parent}/*.txt?parser=json",
            f"file://{web.parent}/*.log?parser=nginx",
        ],
        outputs=[f"file://{out}"],
        state_dir=str(tmp_path / "state"),
    )
    async with shipping(cfg):
        await wait_for(lambda: len(read_ndjson(out)) >= 2)
    records = read_ndjson(out)
    [app_record] = by_file(records, app)
    [web_record] = by_file(records, web)
    assert (app_record["message"], app_record["order"], app_record["level"]) == (
        "order 42 paid",
        42,
        "info",
    )
    assert web_record["message"] == ACCESS
    assert web_record["http.response.status_code"] == 200
    assert web_record["url.query"] == "full=1"
    assert "log.parse_error" not in app_record and "log.parse_error" not in web_record


async def test_inputs_without_options_use_the_global_parser(tmp_path: Path) -> None:
    app, web = logs_in(tmp_path)
    out = tmp_path / "out.ndjson"
    cfg = ship_config(
        inputs=[f"file://{app.parent}/*.txt?parser=raw", f"file://{web.parent}/*.log"],
        outputs=[f"file://{out}"],
        parser="nginx",
        state_dir=str(tmp_path / "state"),
    )
    async with shipping(cfg):
        await wait_for(lambda: len(read_ndjson(out)) >= 2)
    records = read_ndjson(out)
    [app_record] = by_file(records, app)
    [web_record] = by_file(records, web)
    assert web_record["http.request.method"] == "GET"
    # ?parser=raw overrides the global nginx: the JSON line is shipped exactly as written.
    assert app_record["message"] == APP
    assert set(app_record) == {
        "@timestamp",
        "message",
        "log.file.path",
        "log.file.id",
        "log.offset",
        "host.name",
    }


async def test_multiline_start_joins_lines_only_in_the_input_that_names_it(
    tmp_path: Path,
) -> None:
    joined, plain = tmp_path / "joined", tmp_path / "plain"
    joined.mkdir()
    plain.mkdir()
    text = "\n".join([*TRACEBACK, "2026-11-22 08:00:03 INFO next"]) + "\n"
    (joined / "a.log").write_text(text)
    (plain / "a.log").write_text(text)
    out = tmp_path / "out.ndjson"
    cfg = ship_config(
        inputs=[
            f"file://{joined}/*.log?multiline_start={quote(DATE_START, safe='')}",
            f"file://{plain}/*.log",
        ],
        outputs=[f"file://{out}"],
        multiline_timeout=0.2,
        state_dir=str(tmp_path / "state"),
    )
    async with shipping(cfg):
        await wait_for(lambda: len(read_ndjson(out)) >= 6)
    records = read_ndjson(out)
    assert [r["message"] for r in by_file(records, joined / "a.log")] == [
        "\n".join(TRACEBACK),
        "2026-11-22 08:00:03 INFO next",
    ]
    assert [r["message"] for r in by_file(records, plain / "a.log")] == [
        *TRACEBACK,
        "2026-11-22 08:00:03 INFO next",
    ]


async def test_input_metric_label_and_checkpoint_are_the_url_without_options(
    tmp_path: Path,
) -> None:
    app, _web = logs_in(tmp_path)
    out = tmp_path / "out.ndjson"
    url = f"file://{app.parent}/*.txt"
    state = str(tmp_path / "state")
    async with shipping(ship_config(inputs=[url], outputs=[f"file://{out}"], state_dir=state)):
        await wait_for(lambda: len(read_ndjson(out)) >= 1)
    with app.open("a") as f:
        f.write('{"message": "second"}\n')
    cfg = ship_config(inputs=[url + "?parser=json"], outputs=[f"file://{out}"], state_dir=state)
    async with shipping(cfg) as sh:
        await wait_for(lambda: len(read_ndjson(out)) >= 2)
        assert sh.metric("sidekick_ship_lines_read_total", input=url) == 1
    # Adding the option kept the position: only the new line was read (and parsed).
    assert [r["message"] for r in read_ndjson(out)] == [APP, "second"]


async def test_http_ingest_input_applies_its_own_parser(tmp_path: Path) -> None:
    out = tmp_path / "out.ndjson"
    port = free_port()
    cfg = ship_config(
        inputs=[f"http://127.0.0.1:{port}?parser=nginx"],
        outputs=[f"file://{out}"],
        state_dir=str(tmp_path / "state"),
    )
    async with shipping(cfg), aiohttp.ClientSession() as session:
        await wait_for(lambda: _listening(port))
        async with session.post(
            f"http://127.0.0.1:{port}/v1/logs",
            data=(ACCESS + "\n").encode(),
            headers={"Content-Type": "text/plain"},
        ) as resp:
            assert resp.status == 202
        await wait_for(lambda: len(read_ndjson(out)) >= 1)
    [record] = read_ndjson(out)
    assert record["http.response.status_code"] == 200
    assert record["message"] == ACCESS


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_config_file_takes_inputs_as_strings_and_as_mappings(tmp_path: Path) -> None:
    app, web = logs_in(tmp_path)
    out = tmp_path / "out.ndjson"
    config = tmp_path / "ship.yaml"
    inputs = [
        f"file://{web.parent}/*.log?parser=nginx",
        {"url": f"file://{app.parent}/*.txt", "parser": "json"},
    ]
    # JSON is YAML: the mapping form exactly as a config file would hold it.
    config.write_text(json.dumps({"ship": {"inputs": inputs}}))
    shipper = ShipperProcess(
        [
            "--config",
            str(config),
            "--output",
            f"file://{out}",
            "--state-dir",
            str(tmp_path / "state"),
        ],
        tmp_path / "shipper.log",
    ).start()
    try:
        shipper.wait_ready()
        wait_for_sync(lambda: len(read_ndjson(out)) >= 2)
        assert shipper.terminate() == 0
    finally:
        shipper.stop_quietly()
    records = read_ndjson(out)
    assert by_file(records, app)[0]["order"] == 42
    assert by_file(records, web)[0]["http.request.method"] == "GET"


class CountingParser:
    """Marks each record with this parser's name and counts its calls."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    def parse(self, records: list[Record]) -> None:
        self.calls += 1
        for r in records:
            r.setdefault("parsed_by", []).append(self.name)


async def test_pipeline_parses_each_batch_once_with_the_parser_it_carries(tmp_path: Path) -> None:
    sinks = ScriptedSink("out"), ScriptedSink("other")
    pipe, _registry = make(tmp_path, *sinks)
    a, b = CountingParser("a"), CountingParser("b")
    tracker = AckTracker()
    batches = [
        SourceBatch([{"message": "1"}, {"message": "2"}], 4, tracker.track(4), a),
        SourceBatch([{"message": "3"}], 2, tracker.track(6), b),
        SourceBatch([{"message": "4"}], 2, tracker.track(8)),
    ]
    await run_until_drained(pipe, *batches)
    # Two outputs share the records: still one call per batch, by that batch's parser.
    assert (a.calls, b.calls) == (1, 1)
    assert [r.get("parsed_by") for batch in batches for r in batch.records] == [
        ["a"],
        ["a"],
        ["b"],
        None,
    ]
    assert all(s.delivered == ["1", "2", "3", "4"] for s in sinks)


# -- user mistakes: one sentence, exit 2, before anything starts ---------------------------


@pytest.fixture
def state(tmp_path: Path) -> list[str]:
    return ["--output", "stdout:", "--state-dir", str(tmp_path / "state")]


def test_unknown_input_option_is_one_sentence_and_exit_2(tmp_path: Path, state: list[str]) -> None:
    spec = f"file://{tmp_path}/*.log?parsr=json"
    result = ship("--input", spec, *state)
    assert_one_sentence(result, spec, "'parsr'", "parser or multiline_start")


def test_unknown_parser_of_one_input_is_one_sentence_naming_the_input(
    tmp_path: Path, state: list[str]
) -> None:
    spec = f"file://{tmp_path}/*.log?parser=nginks"
    result = ship("--input", f"file://{tmp_path}/*.txt", "--input", spec, *state)
    assert_one_sentence(result, spec, "'nginks'", "use one of raw, json")


def test_bad_multiline_regex_of_one_input_is_one_sentence_naming_the_input(
    tmp_path: Path, state: list[str]
) -> None:
    spec = f"file://{tmp_path}/*.log?multiline_start=%28unclosed"
    result = ship("--input", spec, *state)
    assert_one_sentence(result, spec, "'(unclosed'", "not a valid regular expression")


def test_question_mark_glob_is_one_sentence_pointing_at_brackets(
    tmp_path: Path, state: list[str]
) -> None:
    spec = f"file://{tmp_path}/app?.log"
    assert_one_sentence(ship("--input", spec, *state), spec, "[?]")


def test_config_mapping_with_an_unknown_field_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "ship.yaml"
    config.write_text(f"ship:\n  inputs:\n    - {{url: 'file://{tmp_path}/*.log', parsr: json}}\n")
    result = ship("--config", str(config), "--output", "stdout:", "--state-dir", str(tmp_path))
    assert_one_sentence(result, "parsr")


# -- the rules, checked by prepare() --------------------------------------------------------


def test_plus_in_an_option_stays_a_plus_and_percent_escapes_are_decoded() -> None:
    url, options = split_options("file:///l/*.log?multiline_start=%5E\\d+%26x&parser=json")
    assert url == "file:///l/*.log"
    assert options == {"multiline_start": "^\\d+&x", "parser": "json"}


def test_option_given_in_the_url_and_as_a_field_is_refused(tmp_path: Path) -> None:
    cfg = ship_config(
        inputs=[InputConfig(url=f"file://{tmp_path}/*.log?parser=json", parser="nginx")],
        outputs=["stdout:"],
        state_dir=str(tmp_path / "state"),
    )
    with pytest.raises(ConfigError, match="both in its URL and as a field"):
        prepare(cfg)


def test_same_input_url_twice_with_different_options_is_refused(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/*.log"
    cfg = ship_config(
        inputs=[url + "?parser=json", url + "?parser=nginx"],
        outputs=["stdout:"],
        state_dir=str(tmp_path / "state"),
    )
    with pytest.raises(ConfigError, match="given twice"):
        prepare(cfg)


def test_multiline_start_on_an_http_input_is_refused(tmp_path: Path) -> None:
    cfg = ship_config(
        inputs=[f"http://127.0.0.1:{free_port()}?multiline_start=x"],
        outputs=["stdout:"],
        state_dir=str(tmp_path / "state"),
    )
    with pytest.raises(ConfigError, match="file:// inputs only"):
        prepare(cfg)
