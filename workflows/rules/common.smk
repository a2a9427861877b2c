# Parameters read from the config in one place.

RESULTS = config.get("results", "results")
SEED = int(config.get("seed", 0))
DEMO_SCALE = config.get("demo_scale", "small")
S4NET = {
    "model_config": "workflows/configs/s4net_demo_model.yaml",
    "size": 128,
    "iterations": 2600,
    "batch_size": 8,
    "lr": 0.02,
    "lr_steps": [2000, 2420],
    "warmup": 50,
    "grad_clip": 5.0,
    "scale_jitter": [0.8, 1.25],  # random zoom; helps the detector generalise on the longer schedule
    "cpu_bf16": "auto",  # bfloat16 autocast where the CPU supports it (fp32 elsewhere: slower)
    **config.get("s4net", {}),
}
