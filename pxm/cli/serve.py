"""``pxm serve``: the Tiled server with pxm's catalog, until a signal stops it."""

from __future__ import annotations

import argparse
import sys

from pxm.cli._common import API_KEY_ENV, _server_config, _stop_on_signals


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the Tiled server on its own until Ctrl-C."""
    from pxm.catalog import TiledService, ensure_layout, redacted_uri, write_key_file

    service = TiledService(_server_config(args))
    with _stop_on_signals():                            # SIGTERM/SIGHUP/SIGINT: stop the Tiled child too
        try:
            service.start()
            ensure_layout(service.client())
            print(f"Tiled server: {service.uri}")
            key_file = write_key_file(service.config.data_dir, service.config.api_key)   # never printed itself
            print(f"API key:      in {key_file} (mode 0600); clients: export {API_KEY_ENV}=$(cat {key_file})")
            print(f"data folder:  {service.config.data_dir}  (detector files under {service.config.raw_path})")
            print(f"catalog:      {redacted_uri(service.config.resolved_catalog_uri)}")
            print(f"connect:      import os; from tiled.client import from_uri; c = from_uri('{service.uri}', "
                  f"api_key=os.environ['{API_KEY_ENV}'])")
            print("Ctrl-C stops the server.", flush=True)
            return service.wait()
        except KeyboardInterrupt:
            print("stopping the Tiled server", file=sys.stderr)
            return 0
        finally:
            service.stop()
