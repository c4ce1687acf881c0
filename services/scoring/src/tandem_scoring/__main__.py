"""``python -m tandem_scoring``: run the scoring service; it refuses to start on a bad model."""

from __future__ import annotations

from tandem_shared.service import serve

from tandem_scoring.app import create_app
from tandem_scoring.registry import ModelError
from tandem_scoring.settings import ScoringSettings


def main() -> None:
    settings = ScoringSettings()
    try:
        app = create_app(settings)
    except ModelError as exc:
        raise SystemExit(f"tandem-scoring: {exc}") from None
    serve(app, settings)


if __name__ == "__main__":
    main()
