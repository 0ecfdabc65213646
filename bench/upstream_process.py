"""The sample dashboard (the offered API) in its own process: python bench/upstream_process.py PORT"""

import sys

from aiohttp import web

from connectors.samples.dashboard import create_dashboard

if __name__ == "__main__":
    web.run_app(create_dashboard(), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
