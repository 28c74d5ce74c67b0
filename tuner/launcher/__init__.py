"""Launchers start an SGLang server for one trial and stop it for sure: a local process group or a container."""

from tuner.launcher.base import Launcher, LaunchError, LaunchSpec, Server

__all__ = ["LaunchError", "LaunchSpec", "Launcher", "Server"]
