"""Kubernetes fields from the kubelet's log paths."""

from __future__ import annotations

from sidekick.ship.k8s_path import k8s_fields

UID = "0b5a2ce4-6ad1-4c0e-a3d9-0d3c7f6a1e2b"
CID = "4f1a0c6e" * 8


def test_pods_layout_gives_namespace_pod_uid_container_and_restart_count() -> None:
    fields = k8s_fields(f"/var/log/pods/shop_web-7d9f8-abcde_{UID}/nginx/3.log")
    assert fields == {
        "k8s.namespace.name": "shop",
        "k8s.pod.name": "web-7d9f8-abcde",
        "k8s.pod.uid": UID,
        "k8s.container.name": "nginx",
        "k8s.container.restart_count": 3,
    }


def test_pods_layout_is_recognised_under_any_mount_point_and_after_rotation() -> None:
    fields = k8s_fields(f"/host/pods/kube-system_etcd-node.a_{UID}/etcd/0.log.20240501-100000")
    assert fields["k8s.pod.name"] == "etcd-node.a"
    assert fields["k8s.container.restart_count"] == 0


def test_containers_layout_gives_the_same_names_and_the_container_id() -> None:
    fields = k8s_fields(f"/var/log/containers/web-0_shop_log-shipper-{CID}.log")
    assert fields == {
        "k8s.namespace.name": "shop",
        "k8s.pod.name": "web-0",
        "k8s.container.name": "log-shipper",
        "container.id": CID,
    }


def test_other_paths_give_nothing() -> None:
    assert k8s_fields("/var/log/nginx/access.log") == {}
    assert k8s_fields(f"/var/log/pods/Shop_web_{UID}/nginx/0.log") == {}  # not a DNS label
    assert k8s_fields("/var/log/pods/shop_web_uid/nginx/0.log") == {}  # no uid
    assert k8s_fields("/var/log/containers/web_shop_nginx-abc.log") == {}  # no container id
