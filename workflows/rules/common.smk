# Parameters read from the config in one place.

RESULTS = config.get("results", "results")
SEED = int(config.get("seed", 0))
DEMO_SCALE = config.get("demo_scale", "small")
