"""``python -m tandem_scoring``: run the scoring service; it refuses to start on a bad model."""

from tandem_shared.service import main

from tandem_scoring.app import create_app
from tandem_scoring.registry import ModelError
from tandem_scoring.settings import ScoringSettings

if __name__ == "__main__":
    main("tandem-scoring", ScoringSettings, create_app, refuse=(ModelError,))
