"""The dashboard: GET / and its static files, shipped in the package (hypersdk/web)."""

from __future__ import annotations

from importlib import resources

from ..errors import NotFound

_TYPES = {".html": b"text/html; charset=utf-8", ".js": b"text/javascript; charset=utf-8",
          ".css": b"text/css; charset=utf-8"}


class WebArea:
    def __init__(self):
        files = resources.files("hypersdk.web")
        self._files = {entry.name: entry.read_bytes() for entry in files.iterdir()
                       if any(entry.name.endswith(ext) for ext in _TYPES)}

    def register(self, app) -> None:
        app.route("/", methods=["GET"], endpoint="dashboard")(self.index)
        app.route("/static/<name>", methods=["GET"], endpoint="static")(self.static)

    def index(self, request):
        return self._serve(request, "index.html")

    def static(self, request, name: str):
        if name not in self._files or name == "index.html":
            raise NotFound(f"no such file: /static/{name}")
        return self._serve(request, name)

    def _serve(self, request, name: str) -> bytes:
        data = self._files[name]
        request.setHeader(b"Content-Type", _TYPES["." + name.rsplit(".", 1)[-1]])
        request.setHeader(b"Content-Length", b"%d" % len(data))
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"Content-Security-Policy", b"default-src 'self'; connect-src 'self' ws: wss:")
        return data
