"""``python -m tandem_router``: run the router; it refuses to start on an invalid policy."""

from __future__ import annotations

from tandem_shared.service import serve

from tandem_router.app import create_app
from tandem_router.loader import PolicyError
from tandem_router.settings import RouterSettings


def main() -> None:
    settings = RouterSettings()
    try:
        app = create_app(settings)
    except PolicyError as exc:
        raise SystemExit(f"tandem-router: {exc}") from None
    serve(app, settings)


if __name__ == "__main__":
    main()
