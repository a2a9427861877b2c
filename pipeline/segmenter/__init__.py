"""The semantic segmenter trained on proxy labels: DeepLab (:mod:`~pipeline.segmenter.model`), its training data
(:mod:`~pipeline.segmenter.data`), training (:mod:`~pipeline.segmenter.train`), evaluation on VOC
(:mod:`~pipeline.segmenter.evaluate`) and VOC mIoU (:mod:`~pipeline.segmenter.metrics`)."""
