"""Mount paths translated to volume directories in args, env, workingDir and ConfigMap files."""

from __future__ import annotations

import stat
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from sidekick.pod import readonly
from sidekick.pod.manifest import read_manifests
from sidekick.pod.paths import Translator, prepare
from tests.pod.conftest import Up


def test_translator_matches_only_at_path_boundaries() -> None:
    t = Translator({"/data": "/run/d", "/etc/nginx": "/run/n", "/etc/nginx/conf.d": "/run/c"})
    assert t("/data") == "/run/d"
    assert t("/data/x.log") == "/run/d/x.log"
    assert t("--dir=/data") == "--dir=/run/d"
    assert t("a:/data:b") == "a:/run/d:b"
    assert t("'/data'") == "'/run/d'"
    assert t("/database") == "/database"
    assert t("/srv/data") == "/srv/data"
    assert t("/data.bak") == "/data.bak"
    assert t("include /etc/nginx/conf.d/*.conf;") == "include /run/c/*.conf;"
    assert t("/etc/nginx/nginx.conf") == "/run/n/nginx.conf"


def test_translator_rewrites_a_mount_path_in_a_file_url() -> None:
    t = Translator({"/var/log/app": "/run/app", "/var/log": "/run/log", "/data": "/run/d"})
    assert t("--input=file:///var/log/app/*.log") == "--input=file:///run/app/*.log"
    assert t("file:///var/log/out.ndjson") == "file:///run/log/out.ndjson"
    assert t("file:///data") == "file:///run/d"
    assert t("file:/data/x") == "file:/run/d/x"
    # Still only at path boundaries: a longer name, or a host in the URL, is not a mount.
    assert t("file:///database") == "file:///database"
    assert t("file:///x/data") == "file:///x/data"
    assert t("file://host/data") == "file://host/data"
    assert t("//data") == "//data"


def test_translation_is_done_once_even_if_a_target_contains_a_mount_path() -> None:
    t = Translator({"/tmp": "/tmp/run/volumes/tmp", "/data": "/tmp/run/volumes/data"})
    assert t("/tmp /data") == "/tmp/run/volumes/tmp /tmp/run/volumes/data"


MANIFEST = """
apiVersion: v1
kind: ConfigMap
metadata: {name: app-conf}
data:
  app.conf: |
    log_dir /data/logs
    untouched /database
---
apiVersion: v1
kind: Pod
metadata: {name: paths}
spec:
  restartPolicy: Never
  volumes:
    - {name: data, emptyDir: {}}
    - {name: conf, configMap: {name: app-conf}}
  containers:
    - name: show
      workingDir: /data/work
      command: [sh, -c, 'echo "pwd=$(pwd)"; echo "args=$1 $2"; echo "env=$DIR $NOT $URL"; cat /etc/app/app.conf; cat /etc/single.conf', sh]
      args: [--out=/data/out, $(SUB)]
      env:
        - {name: DIR, value: /data/x}
        - {name: NOT, value: /database}
        - {name: URL, value: 'file:///data/in.log'}
        - {name: SUB, value: /data/sub}
      volumeMounts:
        - {name: data, mountPath: /data}
        - {name: conf, mountPath: /etc/app, readOnly: true}
        - {name: conf, mountPath: /etc/single.conf, subPath: app.conf}
"""


def test_paths_are_translated_in_args_env_workingdir_and_configmap_files(
    start_up: Callable[..., Up],
) -> None:
    up = start_up(MANIFEST)
    assert up.wait_exit() == 0, up.err
    pod = up.run_dir.resolve() / "paths"
    data = pod / "volumes" / "data"
    out = (pod / "logs" / "show.log").read_text().splitlines()
    assert out[0] == f"pwd={data}/work"
    assert out[1] == f"args=--out={data}/out {data}/sub"
    assert out[2] == f"env={data}/x /database file://{data}/in.log"
    conf = pod / "configmaps" / "conf" / "show"
    assert out[3:5] == [f"log_dir {data}/logs", "untouched /database"]
    assert out[5:7] == [f"log_dir {data}/logs", "untouched /database"]
    assert (conf / "app.conf").read_text().startswith(f"log_dir {data}/logs")


def test_secret_volume_and_env_sources(start_up: Callable[..., Up]) -> None:
    manifest = """
    apiVersion: v1
    kind: Secret
    metadata: {name: creds}
    data: {password: aHVudGVyMg==}
    stringData: {user: admin}
    ---
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: settings}
    data: {MODE: fast, LEVEL: "3"}
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: paths, namespace: team}
    spec:
      restartPolicy: Never
      volumes: [{name: s, secret: {secretName: creds}}]
      containers:
        - name: show
          command: [sh, -c, 'echo "$APP_MODE $APP_LEVEL $PASS $POD $NS $IP $NODE_SET $MISSING"; cat /secrets/user']
          envFrom: [{prefix: APP_, configMapRef: {name: settings}}]
          env:
            - {name: PASS, valueFrom: {secretKeyRef: {name: creds, key: password}}}
            - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
            - {name: NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
            - {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
            - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
            - {name: NODE_SET, value: "$(NODE)-x"}
            - {name: MISSING, valueFrom: {configMapKeyRef: {name: nope, key: k, optional: true}}}
          volumeMounts: [{name: s, mountPath: /secrets}]
    """
    up = start_up(manifest)
    assert up.wait_exit() == 0, up.err
    import socket

    lines = (up.run_dir / "paths" / "logs" / "show.log").read_text().splitlines()
    assert lines[0] == f"fast 3 hunter2 paths team 127.0.0.1 {socket.gethostname()}-x "
    assert lines[1] == "admin"


def test_configmap_items_modes_and_readonly_paths(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Where no mount namespace can be made, up says the readOnly mount stays writable.
    monkeypatch.setattr(readonly, "available", lambda: False)
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(
        textwrap.dedent(
            """
            apiVersion: v1
            kind: ConfigMap
            metadata: {name: scripts}
            data: {run.sh: "exec /work/bin/app", other: "x"}
            ---
            apiVersion: v1
            kind: Pod
            metadata: {name: modes}
            spec:
              volumes:
                - name: s
                  configMap:
                    name: scripts
                    items: [{key: run.sh, path: bin/run.sh, mode: 0755}]
                - {name: work, emptyDir: {}}
              containers:
                - name: app
                  command: [/scripts/bin/run.sh]
                  volumeMounts:
                    - {name: s, mountPath: /scripts}
                    - {name: work, mountPath: /work, readOnly: true}
            """
        )
    )
    manifests = read_manifests([str(manifest)])
    dirs = prepare(manifests.pods[0], manifests, tmp_path / "run")
    script = dirs.root / "configmaps" / "s" / "app" / "bin" / "run.sh"
    assert script.read_text() == f"exec {dirs.root}/volumes/work/bin/app"
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    assert not (script.parent.parent / "other").exists()
    assert "readOnly mounts (app at /work) are not enforced" in caplog.text
    # The ConfigMap volume is read-only whatever the mount says; /work because it says so.
    assert dirs.read_only == {
        "app": [str(dirs.root / "configmaps" / "s" / "app"), str(dirs.root / "volumes" / "work")]
    }
