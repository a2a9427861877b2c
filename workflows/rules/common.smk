# Parameters read from the config in one place.

RESULTS = config.get("results", "results")
SEED = int(config.get("seed", 0))
DEMO_SCALE = config.get("demo_scale", "small")
S4NET = {
    "model_config": "workflows/configs/s4net_demo_model.yaml",
    "size": 128,
    "iterations": 900,
    "batch_size": 8,
    "lr": 0.01,
    "lr_steps": [680, 840],
    "warmup": 50,
    "grad_clip": 5.0,
    **config.get("s4net", {}),
}
