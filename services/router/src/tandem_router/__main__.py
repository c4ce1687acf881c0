"""``python -m tandem_router``: run the router; it refuses to start on an invalid policy."""

from tandem_policy.loader import PolicyError
from tandem_shared.service import main

from tandem_router.app import create_app
from tandem_router.settings import RouterSettings

if __name__ == "__main__":
    main("tandem-router", RouterSettings, create_app, refuse=(PolicyError,))
