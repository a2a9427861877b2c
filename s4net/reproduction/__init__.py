"""Reproducing the paper beyond the model: ablation tables (:mod:`~s4net.reproduction.ablation`, Tables 1-3),
gradient maps (:mod:`~s4net.reproduction.gradient_maps`, Fig. 6), the Mask R-CNN peer
(:mod:`~s4net.reproduction.maskrcnn_peer`), the experiment runs' names (:mod:`~s4net.reproduction.variants`),
and their ``s4net`` verbs (:mod:`~s4net.reproduction.cli`)."""
