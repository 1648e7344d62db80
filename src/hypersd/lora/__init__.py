"""LoRA adapters on one UNet (their roles in a run) and LoRA files: save, load, merge, export."""
