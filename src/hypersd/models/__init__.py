"""The model interface over SD1.x / SDXL pipelines, pipeline files, the discriminator, the tiny SD."""
