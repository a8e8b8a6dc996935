"""FastAPI churn service with shadow mode (uvicorn)."""
