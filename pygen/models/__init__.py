"""Thin model classes built on pygen.layers."""

from pygen.models.flows import NICE, FlowModel, Glow, GlowStep, RealNVP

__all__ = ["NICE", "FlowModel", "Glow", "GlowStep", "RealNVP"]
