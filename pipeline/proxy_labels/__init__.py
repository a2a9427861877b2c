"""Proxy labels: the resumable, sharded runner (:mod:`~pipeline.proxy_labels.runner`, ``wsss proxy-labels``)
and the layout of its output folder (:mod:`~pipeline.proxy_labels.manifest`)."""
