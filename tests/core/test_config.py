from pathlib import Path

import msgspec
import pytest

from sidekick.core.config import build_config, load_yaml_file, set_dotted
from sidekick.core.errors import ConfigError


class Batch(msgspec.Struct, forbid_unknown_fields=True):
    max_records: int = 500
    timeout: str = "1s"


class Cfg(msgspec.Struct, forbid_unknown_fields=True):
    state_dir: str = "/tmp/state"
    batch: Batch = msgspec.field(default_factory=Batch)
    inputs: list[str] = msgspec.field(default_factory=list)


def test_file_is_overridden_by_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("ship:\n  state_dir: /from/file\n  batch:\n    max_records: 10\n")
    cfg = build_config(Cfg, file=f, section="ship", overrides={"batch.max_records": 20})
    assert cfg.state_dir == "/from/file"
    assert cfg.batch.max_records == 20


def test_defaults_apply_without_a_file() -> None:
    assert build_config(Cfg).batch.max_records == 500


def test_wrong_type_names_the_field_and_the_fix(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("batch:\n  max_records: many\n")
    with pytest.raises(ConfigError) as err:
        build_config(Cfg, file=f)
    msg = str(err.value)
    assert "batch.max_records" in msg
    assert "int" in msg
    assert "SIDEKICK_BATCH_MAX_RECORDS" in msg


def test_unknown_field_is_named(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("batch:\n  max_recrods: 5\n")
    with pytest.raises(ConfigError, match="max_recrods"):
        build_config(Cfg, file=f)


def test_yaml_syntax_error_gives_line(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("a: [1, 2\nb: 3\n")
    with pytest.raises(ConfigError, match="line"):
        load_yaml_file(f)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml_file(tmp_path / "nope.yaml")


def test_set_dotted_creates_levels() -> None:
    tree: dict[str, object] = {"a": 1}
    set_dotted(tree, "b.c.d", 2)
    assert tree == {"a": 1, "b": {"c": {"d": 2}}}
