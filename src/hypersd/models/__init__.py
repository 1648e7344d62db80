"""Model construction: the tiny Stable-Diffusion-architecture model of the Shapes world."""
