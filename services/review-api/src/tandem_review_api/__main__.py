"""``python -m tandem_review_api``: run the review API in the foreground."""

from tandem_shared.service import main

from tandem_review_api.app import create_app
from tandem_review_api.settings import ReviewApiSettings

if __name__ == "__main__":
    main("tandem-review-api", ReviewApiSettings, create_app)
