"""twistd glue: ``twistd -n hypersdk --config FILE [--listen ENDPOINT]``.

makeService reads the configuration and builds the object graph; nothing here
opens a socket, a database or a thread (the service does that when started).
"""

from __future__ import annotations

import os
import sys

from twisted.python import usage

from .config import check_exposure, load_config
from .errors import ConfigError


class Options(usage.Options):
    optParameters = [
        ["config", "c", "etc/hypersdk.yaml", "YAML configuration file."],
        ["listen", "l", None, "Twisted endpoint string to serve the API on (overrides 'listen')."],
    ]

    def postOptions(self):
        try:
            self["parsed"] = config = load_config(self["config"])
            check_exposure(config, self["listen"] or config.listen)
        except ConfigError as e:
            # One line naming the file and key, then exit 1 (not the whole usage text).
            sys.stderr.write(f"hypersdk: {e}\n")
            raise SystemExit(1)


def makeService(options):
    from twisted.internet import reactor

    from .wiring import build_service

    config = options["parsed"]
    return build_service(config, reactor, listen=options["listen"] or config.listen, cwd=os.getcwd())
