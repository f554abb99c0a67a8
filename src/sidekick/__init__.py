"""sidekick: sidecars for Kubernetes Pods.

`sidekick ship` ships logs, `sidekick sync` publishes a git ref into a volume, and
`sidekick up` runs Pod manifests on one machine with the kubelet's lifecycle rules.
"""

__version__ = "0.1.0"
