"""What a run leaves for people: the report's tables and figures (:mod:`~pipeline.reporting.report`) and the
run's provenance (:mod:`~pipeline.reporting.provenance`)."""
