"""projected volumes (Secret, ConfigMap and downward API sources), with the real ``sidekick up``."""

from __future__ import annotations

import os
from pathlib import Path

from tests.pod.examples import example, run_to_end


def test_sources_are_projected_into_one_directory_with_paths_and_modes(tmp_path: Path) -> None:
    done = run_to_end(tmp_path, example("projected-volume.yaml"))
    assert done.code == 0, done.err
    lines = done.lines("volume-test/container-test")
    # Only the listed keys, under their paths; the ..data layout of the kubelet.
    listed = [x for x in lines if x.startswith(".")]
    assert "./my-group" in listed and "./labels" in listed and "./..data" in listed
    assert not any("unused" in x or "password" in x for x in listed)
    assert "my-user" in lines
    assert "log_level=debug" in lines
    assert 'app="projected-demo"' in "\n".join(lines)
    # Item mode wins over defaultMode; defaultMode applies to the others.
    assert "400 my-group/my-username" in lines
    assert "440 my-group/my-config" in lines
    assert "440 labels" in lines
    volume = done.run_dir / "volume-test" / "volumes" / "all-in-one"
    assert os.readlink(volume / "my-group") == "..data/my-group"


def test_service_account_token_and_trust_bundle_are_refused_without_a_second_error(
    tmp_path: Path,
) -> None:
    done = run_to_end(tmp_path, example("projected-service-account-token.yaml"))
    assert done.code == 2
    err = done.err
    assert (
        "spec.volumes[0].projected.sources[0].serviceAccountToken: not supported by sidekick up"
        in err
    )
    assert "put a token in a Secret and project that instead" in err
    assert "spec.volumes[0].projected.sources[1].clusterTrustBundle: not supported" in err
    assert "Traceback" not in err


def test_missing_objects_and_keys_are_named(tmp_path: Path) -> None:
    text = """
apiVersion: v1
kind: ConfigMap
metadata: {name: present}
data: {a: "1"}
---
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
    - {name: c, image: busybox, command: [sleep, "1"], volumeMounts: [{name: v, mountPath: /v}]}
  volumes:
    - name: v
      projected:
        sources:
          - secret: {name: absent}
          - secret: {name: also-absent, optional: true}
          - configMap: {name: present, items: [{key: b, path: b}]}
"""
    done = run_to_end(tmp_path, text)
    assert done.code == 2
    assert "sources[0].secret.name: Secret 'absent' is not in the given files" in done.err
    assert "also-absent" not in done.err
    assert "sources[2].configMap.items[0].key: 'b' is not in the object" in done.err


def test_an_unsupported_volume_is_one_error_not_two(tmp_path: Path) -> None:
    done = run_to_end(tmp_path, example("unsupported-volume.yaml"))
    assert done.code == 2
    assert "volume 'task-pv-storage' of type 'persistentVolumeClaim' is not supported" in done.err
    assert "no volume named" not in done.err
