"""The maths of the method, torch only: the DDIM jump, segments, losses, image metrics."""
