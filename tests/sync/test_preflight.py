"""The checks before the first sync name the bad setting; ``--add-user`` adds a missing UID."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidekick.core.errors import ConfigError
from sidekick.sync.config import SyncConfig
from sidekick.sync.preflight import add_user, preflight


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ref": " "}, "--ref is empty"),
        ({"depth": -1}, "--depth -1 is negative"),
        ({"link": ".git"}, "would clash with the repository"),
        ({"webhook_method": "PO ST"}, "is not an HTTP method"),
        ({"username": "bob"}, "--password-file is not"),
        ({"period": 0.001}, "--period 0.001s is too short"),
        ({"exechook_command": "sh -c 'unclosed"}, "names no program"),
        ({"exechook_command": " true"}, "' true' names no program"),
        ({"exechook_command": "  "}, "--exechook-command is empty"),
        (
            {"pre_publish_exechook_command": "sh -c 'unclosed"},
            '--pre-publish-exechook-command "sh -c \'unclosed" names no program',
        ),
        ({"pre_publish_exechook_command": " "}, "--pre-publish-exechook-command is empty"),
        ({"webhook_url": "ftp://h/x"}, "is not an http(s) URL"),
        (
            {"webhook_url": "http://h/x", "webhook_success_status": -2},
            "--webhook-success-status -2 is not an HTTP status",
        ),
        ({"sparse_checkout_file": "/no/such/file"}, "does not exist or cannot be read"),
        (
            {"exechook_command": "true", "exechook_timeout": 0.5},
            "--exechook-timeout 0.5s is too short; use at least 1s",
        ),
        ({"exechook_command": "true", "exechook_backoff": 0.1}, "--exechook-backoff 0.1s"),
        ({"webhook_url": "http://h/x", "webhook_timeout": 0.5}, "--webhook-timeout 0.5s"),
        ({"webhook_url": "http://h/x", "webhook_backoff": 0.1}, "--webhook-backoff 0.1s"),
    ],
)
def test_preflight_names_the_bad_setting(
    tmp_path: Path, fields: dict[str, object], message: str
) -> None:
    cfg = SyncConfig(repo="file:///nowhere/repo", root=str(tmp_path / "root"), **fields)  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as info:
        preflight(cfg)
    assert message in str(info.value)


def test_touch_and_error_files_do_not_make_root_look_foreign(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "synced").write_text("")
    (root / "state").mkdir()
    cfg = SyncConfig(repo="file:///r", root=str(root), touch_file="synced", error_file="state/e")
    preflight(cfg)


def test_add_user_adds_a_missing_uid_once(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    assert not add_user(0, 0, "/root", str(passwd))
    assert add_user(4242, 4242, "/tmp", str(passwd))
    assert not add_user(4242, 4242, "/tmp", str(passwd))
    assert passwd.read_text().splitlines()[1:] == ["git-sync:x:4242:4242::/tmp:/sbin/nologin"]
    with pytest.raises(ConfigError, match="--add-user cannot add UID 7"):
        add_user(7, 7, "/tmp", str(tmp_path / "missing" / "passwd"))
