"""The REST API (Murano-compatible where Murano has the route).

`app` builds the application and maps errors to HTTP in one place; one
module per kind of resource holds its routes (`environments`, `actions`,
`tasks`, `packages`, `tokens`), `events` the dashboard's event streams,
`handling` what they share. `openapi` is the document served at
/v1/openapi.json and `serving` the HTTP server's own limits.
"""

from catalog.api.app import make_app

__all__ = ["make_app"]
