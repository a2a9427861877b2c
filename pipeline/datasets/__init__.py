"""The datasets of the DAG, in their real formats: PASCAL VOC 2012 (:mod:`~pipeline.datasets.voc`), keyword-tagged
ImageNet subsets and the wnid -> VOC class map (:mod:`~pipeline.datasets.imagenet`), and the synthetic salient
world that writes all three (:mod:`~pipeline.datasets.synthetic`)."""
