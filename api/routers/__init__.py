"""One router per area of the API; `api/app.py` includes them."""
