"""Flask churn service with shadow mode (gunicorn, 2 workers, --preload)."""
