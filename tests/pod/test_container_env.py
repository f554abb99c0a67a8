"""A container's environment from ConfigMaps, as the kubelet builds it, with the real ``up``."""

from __future__ import annotations

from pathlib import Path

from tests.pod.examples import run_to_end

CONFIG_MAP = """
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data:
  MODE: fast
binaryData:
  BLOB: aGk=
---
"""

ENV_FROM = (
    CONFIG_MAP
    + """
apiVersion: v1
kind: Pod
metadata: {name: env-from}
spec:
  restartPolicy: Never
  volumes:
    - {name: settings, configMap: {name: settings}}
  containers:
    - name: show
      image: busybox
      command: [sh, -c, 'echo "MODE=$MODE BLOB=${BLOB-unset} S_BLOB=${S_BLOB-unset}"; cat /cfg/BLOB']
      envFrom:
        - configMapRef: {name: settings}
        - {prefix: S_, configMapRef: {name: settings}}
      env:
        - name: OPTIONAL_BLOB
          valueFrom: {configMapKeyRef: {name: settings, key: BLOB, optional: true}}
      volumeMounts:
        - {name: settings, mountPath: /cfg}
"""
)


def test_binary_data_gives_no_variable_but_is_in_the_volume(tmp_path: Path) -> None:
    done = run_to_end(tmp_path, ENV_FROM)
    assert done.code == 0, done.err
    assert done.lines("env-from/show") == ["MODE=fast BLOB=unset S_BLOB=unset", "hi"]


KEY_REF = (
    CONFIG_MAP
    + """
apiVersion: v1
kind: Pod
metadata: {name: key-ref}
spec:
  restartPolicy: Never
  containers:
    - name: show
      image: busybox
      command: [sh, -c, 'echo "$BLOB"']
      env:
        - name: BLOB
          valueFrom: {configMapKeyRef: {name: settings, key: BLOB}}
"""
)


def test_a_key_reference_to_binary_data_is_refused_with_the_fix(tmp_path: Path) -> None:
    done = run_to_end(tmp_path, KEY_REF)
    assert done.code == 2, done.err
    assert (
        "spec.containers[0].env[0].valueFrom.configMapKeyRef.key: ConfigMap 'settings': "
        "key 'BLOB' is in binaryData" in done.err
    )
    assert "move it to data, use one of ['MODE']" in done.err
    assert not done.lines("key-ref/show")
