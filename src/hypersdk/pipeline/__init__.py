"""The migration pipeline and what it is built from."""

from __future__ import annotations

from ..config import Config
from .migration import MigrationPipeline


def build_pipeline(config: Config, reactor, *, cwd: str, vsphere, store, confirm=None, appliance=None
                   ) -> MigrationPipeline:
    return MigrationPipeline(reactor, config, cwd, vsphere, store, confirm=confirm, appliance=appliance)
