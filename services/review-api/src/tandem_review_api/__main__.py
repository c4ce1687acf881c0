from tandem_shared.service import serve

from tandem_review_api.app import create_app
from tandem_review_api.settings import ReviewApiSettings

settings = ReviewApiSettings()
serve(create_app(settings), settings)
