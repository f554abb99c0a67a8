"""The ``file:`` and ``stdout:`` outputs."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from sidekick.core.errors import ConfigError
from sidekick.ship.sinks import OutputSpec, create_sink
from sidekick.ship.sinks.file import FileSink
from tests.ship.helpers import first_stdout_record


async def test_file_output_appends_one_ndjson_line_per_record(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    path.write_bytes(b'{"already":"there"}\n')
    sink = create_sink(OutputSpec(f"file://{path}"))
    await sink.send([{"message": "a"}, {"message": "b\nc"}])
    await sink.aclose()
    lines = [msgspec.json.decode(x) for x in path.read_bytes().splitlines()]
    assert lines == [{"already": "there"}, {"message": "a"}, {"message": "b\nc"}]


async def test_file_output_reopens_a_file_moved_away(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    sink = create_sink(OutputSpec(f"file://{path}"))
    assert isinstance(sink, FileSink)
    await sink.send([{"message": "1"}])
    os.rename(path, tmp_path / "out.ndjson.1")
    sink._checked = 0.0  # the identity check runs at most once a second
    await sink.send([{"message": "2"}])
    await sink.aclose()
    assert msgspec.json.decode(path.read_bytes()) == {"message": "2"}


def test_file_output_in_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        create_sink(OutputSpec(f"file://{tmp_path}/nope/out.ndjson"))


def test_stdout_output_writes_ndjson_to_standard_output(tmp_path: Path) -> None:
    assert first_stdout_record(tmp_path, line="to stdout")["message"] == "to stdout"


async def test_file_output_ends_a_line_torn_by_a_crash_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "out.ndjson"
    path.write_bytes(b'{"message":"whole"}\n{"mess')
    sink = create_sink(OutputSpec(f"file://{path}"))
    await sink.send([{"message": "next"}])
    await sink.aclose()
    assert path.read_bytes().splitlines()[1:] == [b'{"mess', b'{"message":"next"}']


@pytest.mark.parametrize("records", [1, 20_000], ids=["small", "threaded"])
async def test_a_batch_written_to_a_deleted_output_is_written_again_to_a_new_one(
    tmp_path: Path, records: int
) -> None:
    # Deleted between two batches, within the second in which the path is not looked at:
    # a write to the unlinked file would count as delivered and be gone with it.
    path = tmp_path / "out.ndjson"
    sink = create_sink(OutputSpec(f"file://{path}"))
    await sink.send([{"message": "before"}])
    os.unlink(path)
    batch = [{"message": f"after {i}"} for i in range(records)]
    await sink.send(batch)
    await sink.aclose()
    assert [msgspec.json.decode(x) for x in path.read_bytes().splitlines()] == batch
