"""Diffusion models: schedule, backbones, denoisers, training, samplers, log-density."""
