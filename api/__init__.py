"""The responders' FastAPI application. Not built yet: see issue 6."""
